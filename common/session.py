"""The trading day: when entries stop, when the flatten happens, early closes.

Times come from the `trading:` config in New York time; holidays and early
closes from the exchange calendar (exchange_calendars' CMES). On an early-close
day the session end moves to the early close and every cut-off keeps its
distance to the end (risk-management.md: "the same number of minutes before").
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
import time as time_module
from functools import lru_cache

from common.clock import NY, from_dt, to_ny


@lru_cache(maxsize=4)
def _calendar(name: str):
    import exchange_calendars as xc  # import is slow-ish; only when a calendar is asked for
    return xc.get_calendar(name, start="2018-01-01", end="2030-12-31")


@dataclass(frozen=True)
class DayTimes:
    day: date
    is_trading_day: bool
    early_close: bool
    start_ns: int
    no_new_entries_ns: int
    flatten_ns: int
    end_ns: int


class SessionCalendar:
    def __init__(self, session_start: time, session_end: time, flatten_time: time,
                 no_new_entries_before_flatten_min: float = 10, calendar: str | None = "CMES"):
        self.session_start = session_start
        self.session_end = session_end
        self.flatten_time = flatten_time
        self.no_entries_gap = timedelta(minutes=no_new_entries_before_flatten_min)
        self.calendar = calendar
        self._cache: dict[date, DayTimes] = {}
        if calendar is not None:
            # load the exchange calendar (pandas, exchange_calendars) now, at start-up: loaded on
            # the first question instead, it took 0.6-2 s inside whatever asked first (a fill's
            # protection) and grew the process by tens of MB after its heap was frozen
            _calendar(calendar)
            self.times(date.fromtimestamp(time_module.time()))

    @classmethod
    def from_config(cls, trading) -> "SessionCalendar":
        return cls(trading.session_start, trading.session_end, trading.flatten_time,
                   trading.no_new_entries_minutes, trading.calendar)

    def _exchange_day(self, day: date) -> tuple[bool, datetime | None]:
        """(is a trading day, early close time in NY or None)."""
        if self.calendar is None:
            return day.weekday() < 5, None
        cal = _calendar(self.calendar)
        import pandas as pd
        ts = pd.Timestamp(day)
        if ts < cal.first_session or ts > cal.last_session:
            return day.weekday() < 5, None
        if not cal.is_session(ts):
            return False, None
        if ts in cal.early_closes:
            close = cal.schedule.loc[ts, "close"].tz_convert(NY).to_pydatetime()
            return True, close
        return True, None

    def is_trading_day(self, day: date) -> bool:
        return self._exchange_day(day)[0]

    def times(self, day: date) -> DayTimes:
        got = self._cache.get(day)
        if got is not None:
            return got
        trading, early = self._exchange_day(day)
        start = datetime.combine(day, self.session_start, NY)
        end = datetime.combine(day, self.session_end, NY)
        flatten = datetime.combine(day, self.flatten_time, NY)
        if early is not None and early < end:
            shift = end - early
            end, flatten = early, flatten - shift
        got = DayTimes(day, trading, early is not None, from_dt(start), from_dt(flatten - self.no_entries_gap),
                       from_dt(flatten), from_dt(end))
        self._cache[day] = got
        return got

    def today(self, ts_ns: int) -> DayTimes:
        return self.times(to_ny(ts_ns).date())

    def phase(self, ts_ns: int) -> str:
        """closed, pre_open, open, no_new_entries, flatten (flatten time until session end), after."""
        t = self.today(ts_ns)
        if not t.is_trading_day:
            return "closed"
        if ts_ns < t.start_ns:
            return "pre_open"
        if ts_ns < t.no_new_entries_ns:
            return "open"
        if ts_ns < t.flatten_ns:
            return "no_new_entries"
        if ts_ns < t.end_ns:
            return "flatten"
        return "after"

    def entries_allowed(self, ts_ns: int) -> bool:
        return self.phase(ts_ns) == "open"

    def must_be_flat(self, ts_ns: int) -> bool:
        """From the flatten time until the next session start: hold nothing."""
        t = self.today(ts_ns)
        return not t.is_trading_day or ts_ns >= t.flatten_ns

    def is_past_flatten(self, ts_ns: int) -> bool:
        t = self.today(ts_ns)
        return ts_ns >= t.flatten_ns

    def trading_day(self, ts_ns: int) -> str:
        """The trading day a timestamp belongs to (YYYY-MM-DD, New York)."""
        return to_ny(ts_ns).date().isoformat()
