"""The two clocks, New York time across DST changes, and the trading day's phases from the CMES calendar."""
from __future__ import annotations

import time as _time
from datetime import date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.clock import NY, EventClock, LiveClock, fmt_ny, from_dt, make_clock, to_ny
from common.session import SessionCalendar

S = 1_000_000_000
UTC = timezone.utc


def ny(y, mo, d, h=0, mi=0, s=0, us=0, fold=0) -> int:
    return from_dt(datetime(y, mo, d, h, mi, s, us, tzinfo=NY, fold=fold))


def utc(y, mo, d, h=0, mi=0, s=0) -> int:
    return from_dt(datetime(y, mo, d, h, mi, s, tzinfo=UTC))


# -- clocks --------------------------------------------------------------

def test_live_clock_is_wall_time_in_ns():
    before = _time.time_ns()
    got = LiveClock().now_ns()
    assert isinstance(got, int) and before <= got <= _time.time_ns()


def test_event_clock_follows_events_and_never_goes_backwards():
    c = EventClock()
    assert c.now_ns() == 0
    assert c.advance(100) == 100
    assert c.advance(50) == 100           # a late event does not move time back
    assert c.now_ns() == 100
    assert c.advance(100) == 100
    assert c.advance(10 * S) == 10 * S
    assert EventClock(start_ns=7).now_ns() == 7


@given(st.lists(st.integers(0, 2**62), max_size=50))
def test_event_clock_is_the_running_maximum(stamps):
    c = EventClock()
    seen = []
    for ts in stamps:
        seen.append(c.advance(ts))
    assert seen == sorted(seen)
    assert c.now_ns() == max(stamps, default=0)


def test_event_clock_stands_still_between_events():
    c = EventClock(5 * S)
    _time.sleep(0.002)
    assert c.now_ns() == 5 * S


def test_make_clock():
    assert isinstance(make_clock("live"), LiveClock)
    assert isinstance(make_clock("event"), EventClock)
    with pytest.raises(ValueError, match="'wall'"):
        make_clock("wall")


# -- New York time across DST --------------------------------------------------

def test_spring_forward_2026_03_08():
    # 01:59:59 EST is followed by 03:00:00 EDT: one real second apart
    before = utc(2026, 3, 8, 6, 59, 59)
    after = before + S
    assert to_ny(before).strftime("%Y-%m-%d %H:%M:%S %Z") == "2026-03-08 01:59:59 EST"
    assert to_ny(after).strftime("%Y-%m-%d %H:%M:%S %Z") == "2026-03-08 03:00:00 EDT"
    assert fmt_ny(before) == "2026-03-08 01:59:59.000"
    assert fmt_ny(after) == "2026-03-08 03:00:00.000"
    # the market open: 09:30 EDT = 13:30 UTC that day, 14:30 UTC the Friday before
    assert ny(2026, 3, 8, 9, 30) == utc(2026, 3, 8, 13, 30)
    assert ny(2026, 3, 6, 9, 30) == utc(2026, 3, 6, 14, 30)
    # the day is 23 hours long
    assert ny(2026, 3, 9) - ny(2026, 3, 8) == 23 * 3600 * S


def test_fall_back_2026_11_01():
    # 01:30 happens twice: first EDT (fold=0), then EST (fold=1), one hour apart
    first, second = ny(2026, 11, 1, 1, 30), ny(2026, 11, 1, 1, 30, fold=1)
    assert first == utc(2026, 11, 1, 5, 30) and second == utc(2026, 11, 1, 6, 30)
    assert second - first == 3600 * S
    assert fmt_ny(first) == fmt_ny(second) == "2026-11-01 01:30:00.000"
    assert to_ny(first).strftime("%Z") == "EDT" and to_ny(second).strftime("%Z") == "EST"
    assert to_ny(second).fold == 1
    assert from_dt(to_ny(first)) == first and from_dt(to_ny(second)) == second
    assert ny(2026, 11, 2, 9, 30) == utc(2026, 11, 2, 14, 30)
    assert ny(2026, 11, 2) - ny(2026, 11, 1) == 25 * 3600 * S


def test_fmt_ny_is_the_spec_stamp_in_milliseconds():
    ts = ny(2025, 1, 15, 10, 30, 45, 123_456)
    assert fmt_ny(ts) == "2025-01-15 10:30:45.123"
    assert fmt_ny(ts + 543) == "2025-01-15 10:30:45.123"
    assert fmt_ny(ny(2025, 1, 15, 10, 30, 45)) == "2025-01-15 10:30:45.000"


def test_fmt_ny_truncates_never_rounds_into_the_next_second_or_day():
    last_ns_of_day = ny(2026, 11, 25) + 24 * 3600 * S - 1
    assert fmt_ny(last_ns_of_day) == "2026-11-25 23:59:59.999"
    assert to_ny(last_ns_of_day).date() == date(2026, 11, 25)
    assert to_ny(ny(2026, 11, 25, 10) - 1).microsecond == 999_999


def test_from_dt_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="naive datetime 2026-03-08T02:30:00 has no time zone"):
        from_dt(datetime(2026, 3, 8, 2, 30))


def test_from_dt_any_zone():
    assert from_dt(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert from_dt(datetime(2026, 11, 25, 9, 30, 0, 250_000, tzinfo=NY)) == utc(2026, 11, 25, 14, 30) + 250_000_000
    assert from_dt(datetime(2026, 11, 25, 15, 30, tzinfo=timezone(timedelta(hours=1)))) == utc(2026, 11, 25, 14, 30)


@given(st.integers(utc(2000, 1, 1), utc(2040, 1, 1)))
def test_to_ny_from_dt_round_trip_to_the_microsecond(ts):
    dt = to_ny(ts)
    assert dt.tzinfo is NY
    assert from_dt(dt) == ts - ts % 1000
    assert fmt_ny(ts) == dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{(ts // 1_000_000) % 1000:03d}"


# -- session calendar ----------------------------------------------------------

@pytest.fixture(scope="module")
def cal() -> SessionCalendar:
    return SessionCalendar(time(9, 30), time(16, 30), time(16, 25), 10, "CMES")


def phases(cal, y, mo, d, stamps):
    return {hm: cal.phase(ny(y, mo, d, *map(int, hm.split(":")))) for hm in stamps}


def test_normal_day_phases(cal):
    # Wednesday 2026-11-25
    got = phases(cal, 2026, 11, 25, ["00:00", "09:29", "09:30", "12:00", "16:14", "16:15", "16:24", "16:25",
                                      "16:29", "16:30", "23:59"])
    assert got == {"00:00": "pre_open", "09:29": "pre_open", "09:30": "open", "12:00": "open", "16:14": "open",
                   "16:15": "no_new_entries", "16:24": "no_new_entries", "16:25": "flatten", "16:29": "flatten",
                   "16:30": "after", "23:59": "after"}
    t = cal.times(date(2026, 11, 25))
    assert t.is_trading_day and not t.early_close
    assert (t.start_ns, t.no_new_entries_ns, t.flatten_ns, t.end_ns) == (
        utc(2026, 11, 25, 14, 30), utc(2026, 11, 25, 21, 15), utc(2026, 11, 25, 21, 25), utc(2026, 11, 25, 21, 30))
    assert cal.entries_allowed(ny(2026, 11, 25, 12)) and not cal.entries_allowed(ny(2026, 11, 25, 16, 15))
    assert not cal.must_be_flat(ny(2026, 11, 25, 16, 24, 59)) and cal.must_be_flat(ny(2026, 11, 25, 16, 25))
    assert not cal.is_past_flatten(ny(2026, 11, 25, 16, 24, 59)) and cal.is_past_flatten(ny(2026, 11, 25, 16, 25))
    # one nanosecond either side of each boundary
    assert cal.phase(t.start_ns - 1) == "pre_open" and cal.phase(t.start_ns) == "open"
    assert cal.phase(t.flatten_ns - 1) == "no_new_entries" and cal.phase(t.flatten_ns) == "flatten"
    assert cal.phase(t.end_ns - 1) == "flatten" and cal.phase(t.end_ns) == "after"


@pytest.mark.parametrize("day, offset_h", [(date(2026, 3, 6), 5), (date(2026, 3, 9), 4),
                                           (date(2026, 10, 30), 4), (date(2026, 11, 2), 5)])
def test_session_times_follow_new_york_across_dst(cal, day, offset_h):
    t = cal.times(day)
    assert t.is_trading_day
    start = datetime.combine(day, time(9, 30), UTC) + timedelta(hours=offset_h)
    assert t.start_ns == from_dt(start)
    assert t.flatten_ns - t.start_ns == (6 * 60 + 55) * 60 * S      # 09:30 -> 16:25 on either side
    assert cal.phase(from_dt(start)) == "open" and cal.phase(from_dt(start) - 1) == "pre_open"


def test_dst_change_days_are_sundays_closed_but_times_are_right(cal):
    for day in (date(2026, 3, 8), date(2026, 11, 1)):
        assert cal.times(day).is_trading_day is False
        assert cal.phase(ny(day.year, day.month, day.day, 12)) == "closed"
    # without an exchange calendar the same DST days still compute New York times
    plain = SessionCalendar(time(9, 30), time(16, 30), time(16, 25), 10, calendar=None)
    assert plain.times(date(2026, 3, 8)).start_ns == utc(2026, 3, 8, 13, 30)     # EDT already
    assert plain.times(date(2026, 11, 1)).start_ns == utc(2026, 11, 1, 14, 30)   # EST already
    assert plain.phase(ny(2026, 3, 9, 9, 30)) == "open" and plain.phase(ny(2026, 3, 7, 12)) == "closed"


def test_early_close_day_after_thanksgiving(cal):
    # CMES closes 2026-11-27 at 12:00 CT = 13:00 New York; every cut-off keeps its distance to the end
    t = cal.times(date(2026, 11, 27))
    assert t.is_trading_day and t.early_close
    assert t.end_ns == ny(2026, 11, 27, 13, 0)
    assert t.flatten_ns == ny(2026, 11, 27, 12, 55)             # 5 minutes before, as 16:25 is before 16:30
    assert t.no_new_entries_ns == ny(2026, 11, 27, 12, 45)      # 10 minutes before the flatten
    assert t.start_ns == ny(2026, 11, 27, 9, 30)
    got = phases(cal, 2026, 11, 27, ["09:30", "12:44", "12:45", "12:54", "12:55", "12:59", "13:00", "16:00"])
    assert got == {"09:30": "open", "12:44": "open", "12:45": "no_new_entries", "12:54": "no_new_entries",
                   "12:55": "flatten", "12:59": "flatten", "13:00": "after", "16:00": "after"}
    assert cal.must_be_flat(ny(2026, 11, 27, 12, 55)) and not cal.entries_allowed(ny(2026, 11, 27, 12, 45))


def test_thanksgiving_itself_is_a_cmes_early_close_session(cal):
    # CME Globex equity futures trade on Thanksgiving morning and halt at 12:00 CT; CMES has it as
    # an early-close session (not a holiday), and the session follows the calendar
    t = cal.times(date(2026, 11, 26))
    assert t.is_trading_day and t.early_close and t.end_ns == ny(2026, 11, 26, 13, 0)


@pytest.mark.parametrize("day", [date(2026, 12, 25), date(2026, 4, 3), date(2026, 1, 1),
                                 date(2026, 11, 28), date(2026, 11, 29)])
def test_holidays_and_weekends_are_closed(cal, day):
    t = cal.times(day)
    assert not t.is_trading_day
    for h in (3, 9, 10, 16, 20):
        ts = ny(day.year, day.month, day.day, h, 30)
        assert cal.phase(ts) == "closed"
        assert not cal.entries_allowed(ts) and cal.must_be_flat(ts)


def test_from_config_uses_the_trading_section():
    from common.config import Config
    cal = SessionCalendar.from_config(Config().trading)
    assert cal.times(date(2026, 11, 25)).flatten_ns == ny(2026, 11, 25, 16, 25)
    assert cal.phase(ny(2026, 12, 25, 12)) == "closed"


def test_trading_day_is_the_new_york_date(cal):
    assert cal.trading_day(ny(2026, 11, 25, 0, 0)) == "2026-11-25"
    assert cal.trading_day(ny(2026, 11, 25, 23, 59, 59)) == "2026-11-25"
    assert cal.trading_day(utc(2026, 11, 26, 4, 59, 59)) == "2026-11-25"     # 23:59:59 EST
    assert cal.trading_day(utc(2026, 11, 26, 5, 0)) == "2026-11-26"
    assert cal.trading_day(utc(2026, 3, 8, 4, 30)) == "2026-03-07"           # 23:30 EST
    assert cal.trading_day(utc(2026, 3, 9, 3, 59)) == "2026-03-08"           # 23:59 EDT
    assert cal.trading_day(utc(2026, 3, 9, 4, 0)) == "2026-03-09"
