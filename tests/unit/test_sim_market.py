"""The simulator's default market day: the data's time of day on the latest full CME session."""
from datetime import date, datetime

import pytest

from common.clock import NY, from_dt
from services.sim.market import latest_full_session, shift_for


@pytest.mark.parametrize("today, expected", [
    ("2026-11-25", "2026-11-25"),   # an ordinary Wednesday
    ("2026-11-26", "2026-11-25"),   # Thanksgiving: an early close in the CMES calendar
    ("2026-11-27", "2026-11-25"),   # the day after: early close
    ("2026-11-29", "2026-11-25"),   # Sunday
    ("2026-12-25", "2026-12-23"),   # Christmas, and the 24th closes early
])
def test_latest_full_session(today, expected):
    assert latest_full_session(date.fromisoformat(today)) == date.fromisoformat(expected)


def test_start_at_without_a_date_lands_on_the_latest_full_session():
    class T:
        def __init__(self, ts): self.ts_ns = ts
    first = from_dt(datetime(2018, 5, 7, 9, 30, tzinfo=NY))
    now = from_dt(datetime(2026, 11, 26, 11, 0, tzinfo=NY))
    shift = shift_for([T(first)], "start_at", None, now)
    assert first + shift == from_dt(datetime(2026, 11, 25, 9, 30, tzinfo=NY))


def test_replay_loops_with_shifted_times_and_paces_across_the_lap():
    from services.sim.market import Replay, Tick
    NS = 10**9
    ticks = [Tick(i * NS, 100 + i, 1, 0, 99 + i, 100 + i) for i in range(3)]
    r = Replay(ticks, offset_ns=0, speed=2.0, loop=True)
    r.start(wall=100.0)
    seen = []
    for _ in range(7):
        wait = r.due_in(100.0 + 10)        # never raises, also at the end of a lap
        assert wait >= 0
        seen.append(r.next()[0])
    assert r.laps == 2
    assert seen == [0, NS, 2 * NS, 3 * NS, 4 * NS, 5 * NS, 6 * NS]     # one span = 3 s, no overlap
    r.i = len(ticks)                       # at the end of the third lap: the fourth starts at 9 s
    assert r.due_in(100.0) == pytest.approx(9 / 2.0)


def test_replay_without_loop_finishes():
    from services.sim.market import Replay, Tick
    ticks = [Tick(i * 10**9, 100, 1, 0, 99, 100) for i in range(2)]
    r = Replay(ticks, offset_ns=0, speed=1.0, loop=False)
    r.start(wall=0.0)
    assert r.next() and r.next() and r.due_in(5.0) == 0.0 and r.next() is None and r.finished


def test_replay_speed_change_keeps_the_tape_in_place():
    from services.sim.market import Replay, Tick
    NS = 10**9
    ticks = [Tick(i * NS, 100, 1, 0, 99, 100) for i in range(100)]
    r = Replay(ticks, offset_ns=0, speed=40.0, loop=False)
    r.start(wall=0.0)
    while r.due_in(0.5) == 0.0:             # 0.5 s at speed 40: 20 s of tape
        r.next()
    assert r.i == 21
    r.set_speed(1.0, wall=0.5)
    assert r.due_in(0.5) == pytest.approx(1.0)      # the tick at 21 s is 1 s of tape away, at speed 1
    assert r.due_in(1.5) == 0.0
