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
