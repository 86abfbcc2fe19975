"""The feed's stale watchdog and token refresher (services/feed/watchdog.py), pure."""
from __future__ import annotations

from services.feed.watchdog import StaleWatchdog, TokenRefresher, needs_login

NS = 1_000_000_000


def phase_by_hour(ts_ns: int) -> str:
    """A toy session: 'open' in the first half of each minute of event time."""
    return "open" if (ts_ns // NS) % 60 < 30 else "closed"


def test_trips_after_its_seconds_inside_the_session_of_the_service_clock():
    w = StaleWatchdog(2.0, "session", phase_by_hour)
    w.fresh(100.0)
    in_session, closed = 10 * NS, 40 * NS
    assert w.check(101.9, in_session, connected=True) is None
    assert w.check(102.1, closed, connected=True) is None          # the service clock says closed
    assert w.check(102.1, in_session, connected=False) is None     # not connected: the hub retries itself
    assert round(w.check(102.1, in_session, connected=True), 1) == 2.1
    assert w.trips == 1
    assert w.check(103.0, in_session, connected=True) is None      # the trip restarts the silence
    assert w.check(104.2, in_session, connected=True) is not None


def test_modes_and_an_event_clock_without_time():
    assert StaleWatchdog(1, "always", phase_by_hour).applies(40 * NS)
    assert not StaleWatchdog(1, "never", phase_by_hour).applies(10 * NS)
    assert StaleWatchdog(1, "session", phase_by_hour).applies(0)    # no event yet: watched


def test_token_refresh_before_expiry_once_per_half_margin():
    t = TokenRefresher(margin_s=600)
    assert t.due(0.0, 1000.0, connected=True) is None               # no token yet
    t.on_token(exp=1000.0 + 3600, now_wall=1000.0)                  # a 1 h token: margin 600 s
    assert t.due(10_000.0, 1000.0 + 2900, True) is None
    assert t.due(10_001.0, 1000.0 + 3001, True) == 599.0
    assert t.due(10_002.0, 1000.0 + 3002, True) is None             # not again at once
    assert t.due(10_302.0, 1000.0 + 3302, True) is not None         # half a margin later: again
    t2 = TokenRefresher(margin_s=600)
    t2.on_token(exp=100.0 + 40, now_wall=100.0)                     # a 40 s token: margin 10 s
    assert t2.margin() == 10.0 and t2.due(10_000.0, 131.0, True) == 9.0
    assert needs_login("HTTP 401 Unauthorized") and not needs_login("connection reset")
