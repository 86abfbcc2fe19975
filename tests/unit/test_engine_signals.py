"""Signal generator: table-driven."""
import pytest

from services.engine.signals import SignalParams, downgrade_reverse, generate, signal_id

P = SignalParams(min_confidence=0.65, reverse_confidence=0.75, max_holding_s=900)

CASES = [
    # direction, conf, position, holding_s, allowed -> kind
    (1, 0.80, 0, 0, True, "LONG_ENTRY"),
    (-1, 0.80, 0, 0, True, "SHORT_ENTRY"),
    (0, 0.90, 0, 0, True, None),
    (1, 0.64, 0, 0, True, None),                 # under min_confidence
    (1, 0.65, 0, 0, True, "LONG_ENTRY"),         # at min_confidence
    (1, 0.99, 0, 0, False, None),                # trading not allowed
    (-1, 0.80, 1, 10, True, "REVERSE_TO_SHORT"),
    (-1, 0.75, 1, 10, True, "EXIT_LONG"),        # not above the reverse threshold
    (-1, 0.70, 1, 10, True, "EXIT_LONG"),
    (-1, 0.60, 1, 10, True, None),               # under min_confidence: hold
    (1, 0.90, 1, 10, True, None),                # agrees: hold
    (0, 0.90, 1, 10, True, None),
    (1, 0.80, -1, 10, True, "REVERSE_TO_LONG"),
    (1, 0.70, -1, 10, True, "EXIT_SHORT"),
    (-1, 0.90, -1, 10, True, None),
    (1, 0.10, 1, 901, True, "EXIT_LONG"),        # max holding, whatever the model says
    (-1, 0.10, -1, 901, True, "EXIT_SHORT"),
    (1, 0.90, 1, 900, True, None),               # exactly at the limit: still held
    (1, 0.90, 1, 901, False, None),              # outside trading phases the flatten decides
]


@pytest.mark.parametrize("direction,conf,position,holding,allowed,want", CASES)
def test_signal_table(direction, conf, position, holding, allowed, want):
    got = generate(direction, conf, position, holding, P, allowed)
    assert (got[0] if got else None) == want


def test_signal_ids_deterministic():
    assert signal_id("LONG_ENTRY", 1_773_066_000_123_456_789) == "LE1773066000"
    assert signal_id("REVERSE_TO_SHORT", 5 * 10**9) == "RS5"
    assert {signal_id(k, 0)[:2] for k in ("EXIT_LONG", "EXIT_SHORT", "REVERSE_TO_LONG", "FLATTEN", "SHORT_ENTRY")} \
        == {"XL", "XS", "RL", "FL", "SE"}


def test_downgrade_reverse():
    assert downgrade_reverse("REVERSE_TO_SHORT") == "EXIT_LONG"
    assert downgrade_reverse("REVERSE_TO_LONG") == "EXIT_SHORT"
    assert downgrade_reverse("LONG_ENTRY") == "LONG_ENTRY"
