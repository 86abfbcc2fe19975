"""Hub payloads as the real hub sends them -> Quote/Trade (common/ticks/normalize.py)."""
from __future__ import annotations

import pytest

from common.messages import Quote, Trade
from common.ticks.normalize import Normalizer

C = "CON.F.US.MES.H26"
TS = "2026-01-15T15:30:45.123456+00:00"
TS_NS = 1768491045123456000


def test_partial_quotes_merge_into_the_last_full_quote():
    n = Normalizer(C)
    assert n.on_event("GatewayQuote", [C, {"bestBid": 5000.25}], 1) == []       # no ask yet
    [t] = n.on_event("GatewayQuote", [C, {"bestAsk": 5000.5, "lastPrice": 5000.25, "timestamp": TS}], 2)
    assert t.msg == Quote(C, 20001, 20002, 20001, TS_NS, 2) and t.issues == ()
    [t] = n.on_event("GatewayQuote", [C, {"bestAsk": 5000.75, "bestBid": None, "timestamp": TS}], 3)
    assert (t.msg.bid_ticks, t.msg.ask_ticks, t.msg.last_ticks) == (20001, 20003, 20001)


def test_trades_as_list_or_single_object_with_aggressor_from_type():
    n = Normalizer(C)
    ticks = n.on_event("GatewayTrade", [C, [
        {"price": 5000.25, "volume": 2, "type": 0, "timestamp": TS},
        {"price": 5000.0, "volume": 1, "type": 1, "timestamp": TS},
    ]], 5)
    assert [t.msg for t in ticks] == [Trade(C, 20001, 2, 1, TS_NS, 5), Trade(C, 20000, 1, -1, TS_NS, 5)]
    [t] = n.on_event("GatewayTrade", [C, {"price": 5000.5, "volume": 3, "type": 7, "timestamp": TS}], 6)
    assert t.msg.aggressor == 0 and t.msg.size == 3


@pytest.mark.parametrize("item, issues, size", [
    ({"price": 5000.25, "type": 0, "timestamp": TS}, ("size_repaired",), 1),
    ({"price": 5000.25, "volume": 2.5, "type": 0, "timestamp": TS}, ("size_repaired",), 2),
    ({"price": 5000.25, "volume": 0, "type": 0, "timestamp": TS}, ("bad_size",), 0),
    ({"price": 5000.30, "volume": 1, "type": 0, "timestamp": TS}, ("off_grid",), 1),
    ({"price": 5000.25, "volume": 1, "type": 0}, ("no_exch_time",), 1),
    ({"price": 5000.25, "volume": 1, "type": 0, "timestamp": "yesterday"}, ("no_exch_time",), 1),
    ({"price": "NaN", "volume": 1}, ("bad_price",), 0),
    ({"price": -1, "volume": 1}, ("bad_price",), 0),
    ({"price": None, "volume": 1}, ("bad_price",), 0),
    ({"price": [1], "volume": 1}, ("bad_price",), 0),
])
def test_trade_field_problems_are_reported(item, issues, size):
    [t] = Normalizer(C).on_event("GatewayTrade", [C, [item]], 99)
    assert t.issues == issues and t.msg.size == size
    if "no_exch_time" in issues:
        assert t.msg.exch_ns == 99


def test_bad_quote_field_keeps_the_previous_value():
    n = Normalizer(C)
    n.on_event("GatewayQuote", [C, {"bestBid": 5000.0, "bestAsk": 5000.25, "timestamp": TS}], 1)
    [t] = n.on_event("GatewayQuote", [C, {"bestBid": float("nan"), "bestAsk": 5000.5, "timestamp": TS}], 2)
    assert (t.msg.bid_ticks, t.msg.ask_ticks) == (20000, 20002) and "bad_price" in t.issues


@pytest.mark.parametrize("target, args", [
    ("GatewayQuote", ["CON.F.US.MES.M26", {"bestBid": 1.0, "bestAsk": 1.25}]),   # other contract
    ("GatewayDepth", [C, [{"price": 1}]]),
    ("GatewayQuote", [C]),
    ("GatewayQuote", "junk"),
    ("GatewayQuote", [C, "junk"]),
    ("GatewayTrade", [C, ["junk", 5]]),
])
def test_irrelevant_or_malformed_events_publish_nothing(target, args):
    n = Normalizer(C)
    assert n.on_event(target, args, 1) == []
    assert sum(n.counts.values()) >= 1


def test_feed_core_latency_stats_are_the_sorted_median_and_nearest_rank_p99():
    """FeedCore.stats picks the median and p99 by selection: the same numbers as sorting."""
    import math
    import random
    import statistics

    from common.ticks.feed_core import FeedCore
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 1999, 2000):
        core = FeedCore("CON.F.US.MES.H26", lambda *a, **k: None)
        core.pub_lat_us.extend(rng.random() * 100 for _ in range(n))
        core.exch_lat_us.extend(rng.random() * 1000 for _ in range(n))
        got = core.stats()
        for name, d in (("pub_latency_us", core.pub_lat_us), ("exch_to_recv_us", core.exch_lat_us)):
            s = sorted(d)
            assert got[name] == {"median": round(statistics.median(s), 1),
                                 "p99": round(s[max(0, math.ceil(0.99 * len(s)) - 1)], 1)}
