"""Table-driven bad-tick rules (common/ticks/sanitize.py)."""
from __future__ import annotations

from collections import Counter

import pytest

from common.messages import FLAG_REPAIRED, FLAG_SUSPECT, Quote, Trade
from common.ticks.normalize import Tick
from common.ticks.sanitize import BadTickLog, Sanitizer

C = "CON.F.US.MES.H26"


def q(bid, ask, t=100, issues=()):
    return Tick(Quote(C, bid, ask, bid, t, t), tuple(issues))


def tr(price, t=100, issues=(), size=1):
    return Tick(Trade(C, price, size, 1, t, t), tuple(issues))


# (ticks fed in order, expected outcome of the LAST one: None = dropped, else its flags, kinds)
CASES = [
    ("clean quote", [q(100, 101)], 0, []),
    ("clean trade", [tr(100)], 0, []),
    ("crossed quote dropped", [q(102, 101)], None, ["crossed"]),
    ("locked quote suspect", [q(101, 101)], FLAG_SUSPECT, ["locked"]),
    ("trade bad price dropped", [tr(0, issues=["bad_price"])], None, ["bad_price_trade"]),
    ("trade bad size dropped", [tr(100, issues=["bad_size"], size=0)], None, ["bad_size"]),
    ("off grid repaired", [tr(100, issues=["off_grid"])], FLAG_REPAIRED, ["off_grid"]),
    ("size repaired", [tr(100, issues=["size_repaired"])], FLAG_REPAIRED, ["size_repaired"]),
    ("no exchange time repaired", [tr(100, issues=["no_exch_time"])], FLAG_REPAIRED, ["no_exch_time"]),
    ("quote kept old field", [q(100, 101, issues=["bad_price"])], FLAG_REPAIRED, ["bad_price"]),
    ("time backwards clamped", [tr(100, t=200), tr(100, t=150)], FLAG_REPAIRED, ["time_backwards"]),
    ("jump suspect", [tr(100), tr(400)], FLAG_SUSPECT, ["jump"]),
    ("small move fine", [tr(100), tr(250)], 0, []),
    ("jump confirmed after three", [tr(100), tr(400), tr(401), tr(402), tr(403)], 0, []),
]


@pytest.mark.parametrize("name, ticks, flags, kinds", CASES, ids=[c[0] for c in CASES])
def test_rules(name, ticks, flags, kinds):
    s = Sanitizer(cross_tolerance_ticks=0, jump_ticks=200, jump_confirm=3)
    for t in ticks[:-1]:
        s.check(t)
    msg, got = s.check(ticks[-1])
    assert got == kinds
    if flags is None:
        assert msg is None and s.counts["dropped"] == 1
    else:
        assert msg is not None and msg.flags == flags


def test_backwards_time_is_clamped_to_the_last():
    s = Sanitizer()
    s.check(tr(100, t=200))
    msg, _ = s.check(tr(100, t=150))
    assert msg.exch_ns == 200


def test_crossed_within_tolerance_is_kept_as_suspect():
    msg, kinds = Sanitizer(cross_tolerance_ticks=1).check(q(102, 101))
    assert msg is not None and kinds == ["locked"] and msg.flags == FLAG_SUSPECT


def test_bad_tick_log_once_per_kind_per_minute():
    now = [0.0]
    log = BadTickLog(60, monotonic=lambda: now[0])
    c = Counter(crossed=1)
    assert log.note(["crossed"], c, "x")
    assert not log.note(["crossed"], c, "x")
    assert log.note(["jump"], c, "x")
    now[0] = 61
    assert log.note(["crossed"], c, "x")
