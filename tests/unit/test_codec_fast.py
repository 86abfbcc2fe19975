"""The msgspec fast path of common.messages agrees with the checked path it shortcuts: the same
bytes as msgpack.packb of the documented map, and the same Envelope, or the same DecodeError."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import messages
from tests.unit.test_messages import FULL, MINIMAL

NS = 1_764_081_000_123_456_789
KW = {"seq": 41, "ts_ns": NS, "src": "engine", "epoch": NS - 5, "hops": {"tick_recv": NS - 9, "engine": NS}}
SAMPLES = list(FULL.values()) + list(MINIMAL.values())


def packb_reference(msg, seq, ts_ns, src, epoch, hops) -> bytes:
    """The wire format as msgpack-python writes it (the codec before msgspec)."""
    body = {name: getattr(msg, name) for name, *_ in messages._FIELDS[type(msg)]}
    return msgpack.packb({"type": type(msg).__name__, "v": messages.SCHEMA_VERSION, "seq": seq, "ts": ts_ns, "src": src,
                          "ep": epoch, "hops": hops, "body": body}, use_bin_type=True)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda x: type(x).__name__)
def test_same_bytes_as_msgpack_and_same_envelope_as_the_checked_path(msg):
    frame = messages.encode(msg, **KW)
    assert frame == packb_reference(msg, **KW)
    fast, checked = messages.decode(frame), messages._decode_checked(frame)
    assert fast == checked and type(fast.msg) is type(checked.msg)


_values = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | \
    st.text(max_size=4) | st.lists(st.integers(0, 3) | st.floats(0, 1), max_size=3)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLES), st.dictionaries(st.sampled_from(
    ["contract", "bid_ticks", "key", "ok", "status", "probs", "confidence", "detail", "pnl_cents", "flags",
     "state", "active", "size"]), _values, max_size=4),
    st.fixed_dictionaries({}, optional={"seq": _values, "v": _values, "src": _values, "ep": _values,
                                        "hops": st.dictionaries(st.text(max_size=3), _values, max_size=2)}))
def test_mutated_frames_fast_and_checked_agree(msg, body, env):
    raw = msgpack.unpackb(messages.encode(msg, **KW), raw=False)
    raw["body"].update(body)
    raw.update(env)
    frame = msgpack.packb(raw, use_bin_type=True)
    try:
        checked = messages._decode_checked(frame)
    except messages.DecodeError as exc:
        with pytest.raises(messages.DecodeError) as info:
            messages.decode(frame)
        assert str(info.value) == str(exc)
        return
    assert messages.decode(frame) == checked
