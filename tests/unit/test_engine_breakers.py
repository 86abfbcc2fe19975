"""Every circuit breaker: trip and clear, on explicit (event) time."""
from services.engine import breakers

NS = 1_000_000_000
T0 = 1_773_066_000 * NS
P = breakers.BreakerParams()


def fresh(needed=()):
    b = breakers.Breakers(P, needed)
    b.check(T0, True)          # start: grace for services and the first quote
    return b


def names(events):
    return [(e.kind, e.active) for e in events]


def test_stale_data_trips_after_5s_in_session_and_clears_on_a_quote():
    b = fresh()
    b.on_quote(T0, 100, 101, 100)
    assert b.check(T0 + 5 * NS, True) == []                     # exactly 5 s: not yet
    assert names(b.check(T0 + 5 * NS + 1, True)) == [("stale_data", True)]
    assert b.check(T0 + 6 * NS, True) == []                     # reported once
    assert names(b.on_quote(T0 + 7 * NS, 100, 101, 100)) == [("stale_data", False)]
    assert not b.any_active()


def test_stale_data_not_outside_session_and_cleared_when_session_closes():
    b = fresh()
    b.on_quote(T0, 100, 101, 100)
    assert b.check(T0 + 60 * NS, False) == []
    b.check(T0 + 60 * NS + 1, True)
    assert "stale_data" in b.active
    assert names(b.check(T0 + 61 * NS, False)) == [("stale_data", False)]


def test_silent_service_trips_per_service_and_clears_when_heartbeats_return():
    b = fresh(["feed", "orders"])
    b.on_heartbeat(T0 + 1 * NS, "feed")
    b.on_heartbeat(T0 + 1 * NS, "orders")
    assert b.check(T0 + 4 * NS, False) == []
    b.on_heartbeat(T0 + 4 * NS, "feed")
    ev = b.check(T0 + 4 * NS + 1, True)
    assert ("silent_service", True) in names(ev)
    assert "orders" in b.active["silent_service"] and "feed" not in b.active["silent_service"]
    ev = b.on_heartbeat(T0 + 5 * NS, "orders")
    assert names(ev) == [("silent_service", False)]


def test_silent_service_never_seen_gets_a_grace_period():
    b = breakers.Breakers(P, ["positions"])
    assert b.check(T0, False) == []
    assert "silent_service" not in b.active
    b.check(T0 + 3 * NS + 1, True)
    assert "positions" in b.active["silent_service"]


def test_silent_service_is_judged_on_wall_time_when_event_time_races_ahead():
    """A replay at 40x moves event time 40 s between two heartbeats a second apart: no trip."""
    wall = [10 * NS]
    b = breakers.Breakers(P, ["feed"], wall=lambda: wall[0])
    for i in range(1, 6):
        wall[0] += NS
        b.on_heartbeat(T0 + 40 * i * NS, "feed")
        assert b.check(T0 + 40 * i * NS, True) == [] or "silent_service" not in b.active
    assert "silent_service" not in b.active
    wall[0] += 3 * NS + 1                   # now the feed really is silent for 3 s of wall time
    assert ("silent_service", True) in names(b.check(T0 + 400 * NS, True))
    wall[0] += NS
    assert names(b.on_heartbeat(T0 + 401 * NS, "feed")) == [("silent_service", False)]


def test_reject_storm_3_in_60s_then_300s_cool_down():
    b = fresh()
    assert b.on_reject(T0) == [] and b.on_reject(T0 + 10 * NS) == []
    assert names(b.on_reject(T0 + 20 * NS)) == [("reject_storm", True)]
    assert b.check(T0 + 319 * NS, False) == []
    assert "reject_storm" in b.active
    assert ("reject_storm", False) in names(b.check(T0 + 320 * NS, False))


def test_rejects_spread_over_more_than_the_window_do_not_trip():
    b = fresh()
    b.on_reject(T0)
    b.on_reject(T0 + 30 * NS)
    assert b.on_reject(T0 + 61 * NS) == []
    assert "reject_storm" not in b.active


def test_price_shock_needs_warm_atr_trips_over_4_atr_and_cools_down_60s():
    b = fresh()
    b.on_price(T0, 1000)
    assert b.on_price(T0 + NS // 2, 1100) == []          # no ATR yet: no judgement
    b.atr_ticks = 2.0
    b.on_price(T0 + 2 * NS, 1000)
    assert b.on_price(T0 + 2 * NS + NS // 2, 1008) == []   # 8 = 4 ATR: not more than
    ev = b.on_price(T0 + 2 * NS + NS // 2 + 1, 1009)
    assert names(ev) == [("price_shock", True)]
    assert b.check(T0 + 62 * NS, False) == [] and "price_shock" in b.active
    assert names(b.check(T0 + 63 * NS, False)) == [("price_shock", False)]


def test_price_shock_only_within_one_second():
    b = fresh()
    b.atr_ticks = 2.0
    b.on_price(T0, 1000)
    assert b.on_price(T0 + NS + 1, 1020) == []


def test_price_shock_from_a_one_second_bar():
    b = fresh()
    b.atr_ticks = 1.0
    assert b.on_second_bar(T0, 1004, 1000) == []
    assert names(b.on_second_bar(T0, 1005, 1000)) == [("price_shock", True)]


def test_price_shock_from_quotes():
    b = fresh()
    b.atr_ticks = 1.0
    b.on_quote(T0, 1000, 1001, 1000)
    assert names(b.on_quote(T0 + NS // 4, 1010, 1011, 1010)) == [("price_shock", True)]


def test_wide_spread_trips_over_4_ticks_and_clears_inside():
    b = fresh()
    assert b.on_quote(T0, 100, 104, 100) == []
    assert names(b.on_quote(T0, 100, 105, 100)) == [("wide_spread", True)]
    assert names(b.on_quote(T0, 100, 102, 100)) == [("wide_spread", False)]


def test_position_mismatch_and_manual_halt():
    b = fresh()
    assert names(b.on_mismatch(True, "broker 1, keeper 0")) == [("position_mismatch", True)]
    assert b.on_mismatch(True) == []
    assert names(b.on_mismatch(False)) == [("position_mismatch", False)]
    assert names(b.halt("op")) == [("manual_halt", True)]
    assert b.names() == ["manual_halt"]
    assert names(b.resume()) == [("manual_halt", False)]
    assert b.names() == []


def test_a_heartbeat_backlog_from_one_service_never_trips_the_others():
    b = fresh(["feed", "orders"])
    b.on_heartbeat(T0, "orders")
    assert b.on_heartbeat(T0 + 10 * NS, "feed") == []       # the feed's backlog ran the clock ahead
    b.on_heartbeat(T0 + 10 * NS, "orders")                  # the orders backlog is read next
    assert b.check(T0 + 10 * NS, False) == []


def test_stale_data_is_judged_on_the_wall_too_when_event_time_stands_still():
    """A dead feed in sim/replay: the event clock barely moves (only the feed's heartbeat guesses
    advance it), so the breaker must trip on wall time, within stale_data_s."""
    wall = [0]
    b = breakers.Breakers(P, wall=lambda: wall[0])
    t = 1_000 * NS
    b.on_quote(t, 100, 101, 100)
    wall[0] = int(4.9 * NS)
    assert b.check(t + 1 * NS, in_session=True) == []              # event time: 1 s, wall: 4.9 s
    wall[0] = int(5.1 * NS)
    (ev,) = b.check(t + 1 * NS, in_session=True)
    assert ev.kind == breakers.STALE_DATA and ev.active and "5.1 s" in ev.detail
    b.on_quote(t + 2 * NS, 100, 101, 100)                           # a fresh quote clears it
    assert breakers.STALE_DATA not in b.active
    # a hole in the data's own time trips too, however fast the replay runs on the wall
    assert names(b.check(t + 8 * NS, in_session=True)) == [(breakers.STALE_DATA, True)]
