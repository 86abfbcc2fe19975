"""The codec: every message type round-trips; a malformed frame raises DecodeError saying what is wrong."""
from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import messages as m
from common.messages import MESSAGE_TYPES, SCHEMA_VERSION, DecodeError, decode, encode, topic_of

NS = 1_764_081_000_123_456_789

# One sample per type with every field set away from its default (None where a field may be null),
# and one with only the required fields (the rest defaulted).
FULL = {
    m.Quote: m.Quote("CON.F.US.MES.H26", 24201, 24202, 24201, NS, NS + 1500, m.FLAG_REPAIRED),
    m.Trade: m.Trade("CON.F.US.MES.H26", 24201, 3, -1, NS, NS + 900, m.FLAG_SUSPECT),
    m.FeedStatus: m.FeedStatus("reconnecting", "ws closed: 1006"),
    m.Bar: m.Bar("CON.F.US.MES.H26", 1, NS, 24200, 24204, 24199, 24203, 57, 30, 25, 19, 24202, 24203),
    m.Prediction: m.Prediction("CON.F.US.MES.H26", NS, -1, 0.71, [0.71, 0.2, 0.09], "v1-abc", 24203, 3.25, 1,
                               41.5, 88.0, False, ["rsi_14", "vol_z"]),
    m.Signal: m.Signal("sig-20261125-0001", "REVERSE_TO_SHORT", "CON.F.US.MES.H26", 0.8, 24203, "v1-abc", "conf 0.80"),
    m.RiskEvent: m.RiskEvent("daily_loss", True, "ERROR", "-$50.00 reached"),
    m.OrderCommand: m.OrderCommand("sig-1", "enter", "CON.F.US.MES.H26", -1, 2, 8, 12, "sig-1", "v1-abc", "model"),
    m.OrderReply: m.OrderReply("sig-1", False, "rejected", "insufficient margin", {"order_id": 12, "why": None}),
    m.OrderEvent: m.OrderEvent(9001, "sig-1:entry", "CON.F.US.MES.H26", "entry", 1, 2, 2, 2, 24203, 24195, 2,
                               "6050.875", "sig-1", "sig-1"),
    m.Fill: m.Fill(7001, 9001, "CON.F.US.MES.H26", "stop", 0, 1, 24195, 37, -1037, NS, "sig-1", "sig-1", "v1"),
    m.Position: m.Position("CON.F.US.MES.H26", -1, 2, "6050.875", NS, 24211, 24191, 9002, 9003, 24200, 750,
                           "sig-1", "v1"),
    m.Account: m.Account(4242, 98_963, "2026-11-25", -1037, 750, 148, 2, 7, 100_000, False),
    m.RoundTrip: m.RoundTrip("CON.F.US.MES.H26", 1, 1, "6050.25", "6053.75", NS, NS + 10**11, 14, 1676, 74,
                             "target", "sig-2", "v1"),
    m.Heartbeat: m.Heartbeat("engine", "degraded", 4321, 12.5, NS, {"queue": 3, "breakers": ["stale_feed"]},
                               {"Position": 17}),
    m.SnapshotRequest: m.SnapshotRequest(["Position", "Account"]),
    m.SnapshotReply: m.SnapshotReply(NS, {"Position": 17, "Account": 3}, [b"\x81\xa1a\x01", b""]),
    m.OperatorCommand: m.OperatorCommand("halt", "operator", "op-1"),
    m.Query: m.Query("positions", {"contract": "CON.F.US.MES.H26", "n": 2}),
    m.Reply: m.Reply(True, "2 positions", {"positions": [{"size": 1}], "nested": {"x": 1.5}}),
    m.ShadowPrediction: m.ShadowPrediction("CON.F.US.MES.H26", NS, 1, 0.61, [0.19, 0.2, 0.61], "shadow-1", "v1-abc", -1,
                                           0.55, 24203, 24202, 24203, 3.25, False, False),
}

MINIMAL = {
    m.FeedStatus: m.FeedStatus("down"),
    m.Prediction: m.Prediction("C", NS, 0, 0.5, [], "v", 1, 0.0, 1, 0.0, 0.0),
    m.OrderCommand: m.OrderCommand("k", "status"),
    m.OrderReply: m.OrderReply("k", True, "accepted"),
    m.OrderEvent: m.OrderEvent(1, "t", "C", "unknown", 0, 1, 1, 1),           # limit/stop ticks None
    m.Fill: m.Fill(1, 1, "C", "entry", 0, 1, 100, 37, None, NS),               # pnl_cents None
    m.Position: m.Position("C", 0, 0, "0"),                                    # every Optional None
    m.Account: m.Account(1, 0, "2026-11-25"),
    m.Heartbeat: m.Heartbeat("feed", "ok", 1, 0.0),
    m.SnapshotRequest: m.SnapshotRequest(),
    m.SnapshotReply: m.SnapshotReply(0, {}, []),
    m.Query: m.Query("status"),
    m.Reply: m.Reply(False),
}


def test_every_message_type_has_a_sample():
    assert set(FULL) == set(MESSAGE_TYPES)
    for cls, msg in FULL.items():
        assert type(msg) is cls
        for f in dataclasses.fields(cls):    # the full sample sets every defaulted field away from its default
            if f.default is not dataclasses.MISSING:
                assert getattr(msg, f.name) != f.default, f"{cls.__name__}.{f.name}"
            elif f.default_factory is not dataclasses.MISSING:
                assert getattr(msg, f.name) != f.default_factory(), f"{cls.__name__}.{f.name}"


@pytest.mark.parametrize("msg", list(FULL.values()) + list(MINIMAL.values()),
                         ids=[f"full-{c.__name__}" for c in FULL] + [f"min-{c.__name__}" for c in MINIMAL])
def test_round_trip(msg):
    frame = encode(msg, seq=41, ts_ns=NS, src="engine", epoch=NS - 5, hops={"feed_recv": NS - 9, "engine": NS})
    env = decode(frame)
    assert env.msg == msg and type(env.msg) is type(msg)
    assert (env.seq, env.ts_ns, env.src, env.epoch, env.hops) == (41, NS, "engine", NS - 5, {"feed_recv": NS - 9, "engine": NS})
    assert env.snapshot is False and env.type == type(msg).__name__
    assert encode(env.msg, seq=41, ts_ns=NS, src="engine", epoch=NS - 5,
                  hops={"feed_recv": NS - 9, "engine": NS}) == frame      # deterministic bytes


def test_envelope_defaults_and_wire_layout():
    q = FULL[m.Quote]
    env = decode(encode(q))
    assert (env.seq, env.ts_ns, env.src, env.epoch, env.hops) == (0, 0, "", 0, {})
    raw = msgpack.unpackb(encode(q, seq=3, ts_ns=5, src="feed", epoch=7), raw=False)
    assert set(raw) == {"type", "v", "seq", "ts", "src", "ep", "hops", "body"}
    assert (raw["type"], raw["v"], raw["seq"], raw["ts"], raw["src"], raw["ep"]) == ("Quote", SCHEMA_VERSION, 3, 5, "feed", 7)
    assert raw["body"]["bid_ticks"] == 24201
    assert topic_of(q) == topic_of(m.Quote) == b"Quote"


def test_floats_and_ints_stay_what_they_were():
    p = decode(encode(m.Prediction("C", NS, 1, 1, [1, 0.0], "v", 1, 2, 1, 3, 4))).msg
    assert p.confidence == 1 and p.atr_ticks == 2        # an int is a valid float field


def test_encode_refuses_non_messages():
    with pytest.raises(TypeError, match="dict is not a message type"):
        encode({"type": "Quote"})


def test_unknown_body_fields_are_ignored_for_forward_compatibility():
    raw = msgpack.unpackb(encode(FULL[m.FeedStatus]), raw=False)
    raw["body"]["added_in_v1_1"] = 5
    assert decode(msgpack.packb(raw)).msg == FULL[m.FeedStatus]


# -- malformed frames ---------------------------------------------------------

def frame_with(change=None, drop_body: str | None = None, drop: str | None = None, msg=None, **body) -> bytes:
    raw = msgpack.unpackb(encode(msg or FULL[m.Quote], seq=1, ts_ns=NS, src="feed", epoch=9), raw=False)
    raw["body"].update(body)
    if drop_body:
        del raw["body"][drop_body]
    if drop:
        del raw[drop]
    if change:
        raw.update(change)
    return msgpack.packb(raw, use_bin_type=True)


def rejected(frame) -> str:
    with pytest.raises(DecodeError) as info:
        decode(frame)
    return str(info.value)


@pytest.mark.parametrize("frame", [b"", b"\xc1", b"\x92\x01", b"\x81\xa1a", b"hello world" * 3,
                                   encode(FULL[m.Quote]) + b"\x00"])
def test_not_msgpack(frame):
    assert rejected(frame).startswith("not msgpack")


@pytest.mark.parametrize("obj, kind", [([1, 2], "list"), ("Quote", "str"), (5, "int"), (None, "NoneType")])
def test_not_a_map(obj, kind):
    assert rejected(msgpack.packb(obj)) == f"frame is a msgpack {kind}, expected a map"


@pytest.mark.parametrize("type_name", ["Order", "quote", "", None, 7, "Envelope"])
def test_unknown_type(type_name):
    assert rejected(frame_with({"type": type_name})) == f"unknown message type {type_name!r}"


@pytest.mark.parametrize("v", [0, 2, "1", None])
def test_wrong_schema_version(v):
    assert rejected(frame_with({"v": v})) == f"Quote: schema version {v!r}, this build speaks {SCHEMA_VERSION}"


def test_missing_schema_version():
    assert rejected(frame_with(drop="v")) == f"Quote: schema version None, this build speaks {SCHEMA_VERSION}"


def test_missing_field():
    assert rejected(frame_with(drop_body="ask_ticks")) == "Quote: missing field 'ask_ticks'"


def test_missing_optional_field_takes_its_default():
    assert decode(frame_with(drop_body="flags")).msg.flags == 0


@pytest.mark.parametrize("field, value, text", [
    ("bid_ticks", "24201", "Quote.bid_ticks: '24201' is str, expected int"),
    ("bid_ticks", 24201.0, "Quote.bid_ticks: 24201.0 is float, expected int"),
    ("contract", 5, "Quote.contract: 5 is int, expected str"),
    ("exch_ns", [1], "Quote.exch_ns: [1] is list, expected int"),
    ("contract", b"CON", "Quote.contract: b'CON' is bytes, expected str"),
])
def test_wrong_field_type(field, value, text):
    assert rejected(frame_with(**{field: value})) == text


def test_wrong_container_and_float_types():
    assert rejected(frame_with(msg=FULL[m.Prediction], probs={"a": 1})) == \
        "Prediction.probs: {'a': 1} is dict, expected list"
    assert rejected(frame_with(msg=FULL[m.Prediction], confidence="0.7")) == \
        "Prediction.confidence: '0.7' is str, expected float/int"
    assert rejected(frame_with(msg=FULL[m.Reply], data=[1])) == "Reply.data: [1] is list, expected dict"
    assert rejected(frame_with(msg=FULL[m.Position], stop_ticks="1")) == \
        "Position.stop_ticks: '1' is str, expected int"


@pytest.mark.parametrize("msg, field", [(FULL[m.Quote], "bid_ticks"), (FULL[m.Quote], "contract"),
                                        (FULL[m.Quote], "flags"), (FULL[m.OrderReply], "detail"),
                                        (FULL[m.Fill], "price_ticks")])
def test_null_where_not_allowed(msg, field):
    assert rejected(frame_with(msg=msg, **{field: None})) == f"{type(msg).__name__}.{field}: null is not allowed"


def test_null_where_allowed():
    assert decode(frame_with(msg=FULL[m.Fill], pnl_cents=None)).msg.pnl_cents is None
    assert decode(frame_with(msg=FULL[m.Position], stop_order_id=None)).msg.stop_order_id is None


@pytest.mark.parametrize("field, value", [("bid_ticks", True), ("flags", False), ("exch_ns", True)])
def test_bool_where_int_expected(field, value):
    assert rejected(frame_with(**{field: value})) == f"Quote.{field}: {value!r} is bool, expected int"


def test_bool_where_float_expected():
    assert rejected(frame_with(msg=FULL[m.Prediction], confidence=True)) == \
        "Prediction.confidence: True is bool, expected float/int"


def test_int_where_bool_expected():
    assert rejected(frame_with(msg=FULL[m.RiskEvent], active=1)) == "RiskEvent.active: 1 is int, expected bool"


@pytest.mark.parametrize("key, value, kind", [
    ("seq", "1", "int"), ("seq", None, "int"), ("seq", True, "int"), ("seq", 1.0, "int"),
    ("ts", "now", "int"), ("ts", False, "int"), ("src", 5, "str"), ("src", None, "str"),
])
def test_bad_envelope_field(key, value, kind):
    assert rejected(frame_with({key: value})) == f"Quote: envelope field {key!r} is {value!r}, expected {kind}"


def test_missing_envelope_field():
    assert rejected(frame_with(drop="seq")) == "Quote: envelope field 'seq' is None, expected int"


@pytest.mark.parametrize("body, kind", [([1, 2], "list"), (None, "NoneType"), ("x", "str")])
def test_body_not_a_map(body, kind):
    assert rejected(frame_with({"body": body})) == f"Quote: body is {kind}, expected a map"


def test_hops_not_a_map():
    assert rejected(frame_with({"hops": [1, 2]})) == "Quote: hops is list, expected a map"


def test_decode_error_is_a_value_error():
    assert issubclass(DecodeError, ValueError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_decode_error(data):
    try:
        decode(data)
    except DecodeError:
        pass


_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
                       | st.text(max_size=8) | st.binary(max_size=8),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                       max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MESSAGE_TYPES), st.dictionaries(st.sampled_from(
    ["contract", "bid_ticks", "key", "ok", "status", "probs", "detail", "pnl_cents", "frames", "seqs", "epoch",
     "state", "service", "pid", "uptime_s", "what", "action", "kind", "active"]), _values, max_size=6),
    st.fixed_dictionaries({}, optional={"seq": _values, "ts": _values, "src": _values, "ep": _values,
                                        "hops": _values}))
def test_mutated_frames_decode_or_raise_decode_error(cls, body, env):
    raw = msgpack.unpackb(encode(FULL[cls]), raw=False)
    raw["body"].update(body)
    raw.update(env)
    try:
        decoded = decode(msgpack.packb(raw, use_bin_type=True))
    except DecodeError:
        return
    assert type(decoded.msg) is cls


@pytest.mark.parametrize("ep", ["1", True, 1.5, None])
def test_bad_epoch(ep):
    assert rejected(frame_with({"ep": ep})) == f"Quote: envelope field 'ep' is {ep!r}, expected int"


def test_missing_epoch_is_zero():
    assert decode(frame_with(drop="ep")).epoch == 0


@pytest.mark.parametrize("hops, text", [({"feed_pub": "x"}, "hop 'feed_pub' = 'x'"), ({"a": True}, "hop 'a' = True"),
                                        ({1: 5}, "hop 1 = 5"), ({"a": 1.5}, "hop 'a' = 1.5")])
def test_bad_hop(hops, text):
    assert rejected(frame_with({"hops": hops})) == f"Quote: {text}, expected a name and int ns"
