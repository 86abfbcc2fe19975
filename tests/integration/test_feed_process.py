"""The feed as a real process against an in-test SignalR hub + login endpoint
(tests/unit/test_hub.py FakeHub): subscribe and receive, drops, garbage, token expiry,
staleness, recording. The same scenarios against the simulator are in test_feed_sim.py."""
from __future__ import annotations

import time

import pytest

from common.bus import Subscriber
from common.config import load_config
from common.messages import FeedStatus, Heartbeat, Quote, Trade
from common.recording import read_recording
from tests.harness.config import write_config
from tests.harness.procs import ServiceProcess, wait_for
from tests.unit.test_hub import FakeHub

pytestmark = pytest.mark.integration
C = "CON.F.US.MES.H26"


def start(tmp_path, hub: FakeHub, **feed):
    cfg_path = write_config(tmp_path, api={"base_url": hub.base_url, "ws_url": hub.url, "username": "u",
                                           "api_key": "k", "account_id": 1},
                            trading={"contract": C},
                            feed={"min_backoff_s": 0.05, "max_backoff_s": 0.3, "stale_check": "never", **feed})
    cfg = load_config(cfg_path)
    sub = Subscriber("test", cfg.bus.feed_pub, cfg.bus.feed_snap)
    proc = ServiceProcess("feed", cfg_path).start()
    return cfg, sub, proc


class Collector:
    def __init__(self, sub: Subscriber):
        self.sub = sub
        self.envs: list = []

    def poll(self):
        self.envs.extend(self.sub.drain())
        return self.envs

    def of(self, cls):
        self.poll()
        return [e for e in self.envs if isinstance(e.msg, cls)]


def synced(col: "Collector"):
    """The subscriber has taken its snapshot AND a live message has arrived (a heartbeat: they
    are never retained), so the SUB socket's subscription has reached the publisher. Trades are
    not retained: push ticks only after this, or the slow joiner loses them."""
    return lambda: any(isinstance(e.msg, Heartbeat) and not e.snapshot for e in col.poll()) \
        and not col.sub.need_snapshot


def subscribed(hub: FakeHub, n: int):
    return lambda: sum(1 for t, _ in hub.invocations if t.startswith("Subscribe")) >= n


def push_tick(hub: FakeHub, price: float):
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
    hub.push("GatewayQuote", C, {"bestBid": price - 0.25, "bestAsk": price, "lastPrice": price, "timestamp": ts})
    hub.push("GatewayTrade", C, [{"price": price, "volume": 1, "type": 0, "timestamp": ts}])


@pytest.fixture
def hub():
    h = FakeHub()
    yield h
    h.close()


def test_subscribe_receive_drop_reconnect_garbage_and_record(tmp_path, hub):
    cfg, sub, proc = start(tmp_path, hub)
    col = Collector(sub)
    try:
        wait_for(subscribed(hub, 2), 15, what="both subscriptions")
        wait_for(synced(col), 5, what="subscriber synced")
        assert {t for t, _ in hub.invocations} == {"SubscribeContractQuotes", "SubscribeContractTrades"}
        assert all(a == [C] for _, a in hub.invocations)
        push_tick(hub, 5000.25)
        wait_for(lambda: col.of(Trade), 5, what="a trade")
        q = col.of(Quote)[-1]
        assert (q.msg.bid_ticks, q.msg.ask_ticks) == (20000, 20001)
        assert q.ts_ns == q.msg.exch_ns and {"tick_recv", "feed_pub"} <= set(q.hops)
        assert col.of(Trade)[-1].msg.aggressor == 1

        hub.drop_all()
        wait_for(subscribed(hub, 4), 10, what="re-subscribe after the drop")
        push_tick(hub, 5000.5)
        wait_for(lambda: any(e.msg.price_ticks == 20002 for e in col.of(Trade)), 5, what="ticks after reconnect")
        states = [e.msg.state for e in col.of(FeedStatus)]
        assert "reconnecting" in states and states[-1] == "subscribed"

        hub.push_raw("garbage!\x1e")
        hub.push("GatewayTrade", C, [{"price": "NaN", "volume": 1}])
        push_tick(hub, 5000.75)
        wait_for(lambda: any(e.msg.price_ticks == 20003 for e in col.of(Trade)), 5, what="ticks after garbage")

        def hb_stats():
            hbs = col.of(Heartbeat)
            return hbs and hbs[-1].msg.stats.get("hub", {}).get("bad_frames") and hbs[-1].msg.stats
        stats = wait_for(hb_stats, 5, what="heartbeat with bad frame count")
        assert stats["bad_ticks"].get("bad_price_trade") == 1
        assert proc.alive()
        assert col.of(Heartbeat)[-1].msg.exch_ns >= q.msg.exch_ns
    finally:
        rc = proc.terminate()
    assert rc == 0, proc.tail()
    files = list((tmp_path / "logs" / "ticks").glob("MESH6_*.rec"))
    assert len(files) == 1
    recs = list(read_recording(files[0]))
    assert sum(r.target == "GatewayTrade" for r in recs) == 4
    assert any(r.target == "#status" and r.args[0] == "reconnecting" for r in recs)


def test_token_expiry_reconnects_with_a_fresh_token_and_keeps_the_subscription(tmp_path):
    hub = FakeHub(token_life_s=4)
    cfg, sub, proc = start(tmp_path, hub)
    col = Collector(sub)
    try:
        wait_for(subscribed(hub, 2), 15, what="subscriptions")
        wait_for(lambda: len(hub.tokens) >= 2, 10, what="a reconnect before the token expires")
        assert hub.tokens[0] != hub.tokens[1]
        wait_for(subscribed(hub, 4), 5, what="re-subscribe with the new token")
        wait_for(synced(col), 5, what="subscriber synced")
        push_tick(hub, 5001.0)
        wait_for(lambda: col.of(Trade), 5, what="ticks with the new token")
    finally:
        proc.terminate()
        hub.close()


def test_silent_feed_is_treated_as_dead_and_reconnected(tmp_path, hub):
    cfg, sub, proc = start(tmp_path, hub, stale_after_s=1.0, stale_check="always")
    col = Collector(sub)
    try:
        wait_for(subscribed(hub, 2), 15, what="subscriptions")
        push_tick(hub, 5000.0)
        wait_for(lambda: len(hub.tokens) >= 2, 8, what="a reconnect of the silent feed")
        wait_for(subscribed(hub, 4), 5, what="re-subscribe")
        wait_for(lambda: any(e.msg.state == "stale" for e in col.of(FeedStatus)), 5, what="FeedStatus stale")
        assert "stale" in proc.output()
    finally:
        proc.terminate()
