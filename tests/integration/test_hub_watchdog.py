"""The feed and the order gateway (real processes) against a simulator as strict as ASP.NET Core
SignalR: the server pings, closes a client silent for its ClientTimeoutInterval, closes a hub at
token expiry. Intervals are shortened in proportion (server keep-alive 0.5 s, client timeout
1.5 s; the clients ping every 0.4 s and rebuild a hub silent for 1.0 s, twice the keep-alive);
test_ten_minutes_at_the_real_defaults runs the real values (--runslow).

- no involuntary disconnect while the clients keep the connection alive;
- a silent market hub (TCP open) is noticed within twice the keep-alive and rebuilt from a
  fresh snapshot; a silent user hub too, entries refused meanwhile, the fill of the gap found
  over REST, nothing lost or duplicated;
- tokens expiring mid-session are replaced before the server closes anything: no quote gap
  over 1 s, no fill missed."""
from __future__ import annotations

import time

import pytest

from common.bus import Subscriber
from common.config import load_config
from common.messages import FeedStatus, Quote
from tests.harness.config import write_config
from tests.harness.procs import ServiceProcess, wait_for
from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import Gw, positions, price, protected, working

pytestmark = pytest.mark.integration

STRICT = {"ping_interval_s": 0.5, "client_timeout_s": 1.5, "handshake_timeout_s": 1.0, "ws_keepalive_s": 1.0}
HUB = {"hub_keep_alive_s": 0.4, "hub_server_timeout_s": 1.0}


class Feed:
    """The feed process and a subscriber that timestamps every live quote as it arrives."""

    def __init__(self, tmp_path, sim, api: dict | None = None, **feed):
        self.cfg_path = write_config(tmp_path, sim, api={**HUB, **(api or {})},
                                     feed={"min_backoff_s": 0.05, "max_backoff_s": 0.5, "stale_check": "never",
                                           **feed})
        cfg = load_config(self.cfg_path)
        self.sub = Subscriber("test", cfg.bus.feed_pub, cfg.bus.feed_snap)
        self.proc = ServiceProcess("feed", self.cfg_path).start()
        self.quotes: list[float] = []           # monotonic arrival of live quotes
        self.statuses: list[tuple[float, str, str]] = []

    def pump(self) -> None:
        now = time.monotonic()
        for env in self.sub.drain():
            if isinstance(env.msg, Quote) and not env.snapshot:
                self.quotes.append(now)
            elif isinstance(env.msg, FeedStatus):
                self.statuses.append((now, env.msg.state, env.msg.detail))

    def watch(self, seconds: float, step: float = 0.02) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump()
            time.sleep(step)

    def wait(self, pred, timeout: float, what: str):
        def check():
            self.pump()
            return pred()
        return wait_for(check, timeout, 0.02, what)

    def max_gap(self, since: float) -> float:
        q = [t for t in self.quotes if t >= since]
        return max((b - a for a, b in zip(q, q[1:])), default=float("inf"))

    def stop(self) -> None:
        self.proc.terminate()
        self.sub.close()


def involuntary(sim) -> dict:
    s = sim.state()["stats"]
    return {k: s.get(k, 0) for k in ("hub_client_timeouts", "hub_token_expired", "hub_pong_timeouts",
                                     "hub_handshake_timeouts")}


def test_strict_server_no_involuntary_disconnects(tmp_path):
    """The short default-suite version of the ten-minute run: 20 s at the shortened intervals
    (40 server keep-alives, 13 client timeouts)."""
    with SimProcess(tmp_path / "sim", speed=2, **STRICT) as sim:
        feed = Feed(tmp_path / "feed", sim)
        gw = Gw(tmp_path / "gw", sim, api=HUB).start()
        try:
            feed.wait(lambda: len(feed.quotes) > 5, 20, "live quotes")
            t0 = time.monotonic()
            feed.watch(20)
            assert involuntary(sim) == {k: 0 for k in involuntary(sim)}
            stats = sim.state()["stats"]
            assert stats["market_connects"] == 1 and stats["user_connects"] == 1, stats
            assert not [s for s in feed.statuses if s[1] != "subscribed"], feed.statuses
            assert gw.status().get("hub") == "connected"
            assert feed.max_gap(t0) < 1.0
        finally:
            gw.stop()
            feed.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)      # ten minutes of wall time, above the suite's 300 s
def test_ten_minutes_at_the_real_defaults(tmp_path):
    """ASP.NET Core's real values (KeepAliveInterval 15 s, ClientTimeoutInterval 30 s, WebSocket
    keep-alive 2 min) and the clients' real ones (ping 10 s, watchdog 30 s): ten minutes of wall
    time, zero involuntary disconnects on either hub."""
    with SimProcess(tmp_path / "sim", speed=1) as sim:
        feed = Feed(tmp_path / "feed", sim, api={"hub_keep_alive_s": 10, "hub_server_timeout_s": 30})
        gw = Gw(tmp_path / "gw", sim, api={"hub_keep_alive_s": 10, "hub_server_timeout_s": 30}).start()
        try:
            feed.wait(lambda: len(feed.quotes) > 5, 30, "live quotes")
            feed.watch(600, step=0.2)
            assert involuntary(sim) == {k: 0 for k in involuntary(sim)}
            stats = sim.state()["stats"]
            assert stats["market_connects"] == 1 and stats["user_connects"] == 1, stats
            assert not [s for s in feed.statuses if s[1] != "subscribed"], feed.statuses
            assert gw.status().get("hub") == "connected"
        finally:
            gw.stop()
            feed.stop()


def test_silent_market_hub_is_noticed_within_twice_the_keep_alive_and_rebuilt(tmp_path):
    with SimProcess(tmp_path / "sim", speed=2, **STRICT) as sim:
        feed = Feed(tmp_path / "feed", sim)
        try:
            feed.wait(lambda: len(feed.quotes) > 5, 20, "live quotes")
            assert sim.control("hub_silent", hub="market")["connections"] == 1
            t0 = time.monotonic()
            feed.wait(lambda: any(s[1] == "reconnecting" for s in feed.statuses), 5, "the watchdog")
            noticed = next(t for t, state, _ in feed.statuses if state == "reconnecting") - t0
            detail = next(d for _, state, d in feed.statuses if state == "reconnecting")
            assert noticed <= 2 * STRICT["ping_interval_s"] + 0.5, f"noticed after {noticed:.2f} s"
            assert "nothing from the server" in detail
            feed.wait(lambda: feed.statuses[-1][1] == "subscribed", 10, "subscribed again")
            back = feed.statuses[-1][0]
            feed.wait(lambda: any(t >= back for t in feed.quotes), 5, "quotes again")
            first = next(t for t in feed.quotes if t >= back)
            assert first - back < 0.5, "a fresh quote snapshot at the subscription, not the next tick"
            assert sim.state()["stats"]["market_connects"] == 2
        finally:
            feed.stop()


def test_silent_user_hub_blocks_entries_finds_the_gap_fill_over_rest_and_is_rebuilt(tmp_path):
    """The user hub goes silent (TCP open) with a bracket working, and its next two connections
    stop after the handshake: the gateway notices within twice the keep-alive, refuses entries,
    finds the target fill of the gap over REST, and once a connection holds, reconciles: the
    fills are the entry and the target, once each."""
    with SimProcess(tmp_path / "sim", speed=1, **STRICT) as sim:
        g = Gw(tmp_path / "gw", sim, api=HUB, orders={"hub_min_backoff_s": 0.1, "hub_max_backoff_s": 0.2}).start()
        try:
            price(sim, "6050.00")
            assert g.enter("LE-SILENT").status == "accepted"
            wait_for(lambda: protected(sim), 10, what="bracket")
            wait_for(lambda: [f.leg for f in g.fills()] == ["entry"], 10, what="entry fill")
            sim.control("stop_after_handshake", hub="user", count=2)
            assert sim.control("hub_silent", hub="user")["connections"] == 1
            t0 = time.monotonic()
            wait_for(lambda: g.status().get("hub") not in ("connected", None), 5, 0.02, "the watchdog")
            noticed = time.monotonic() - t0
            assert noticed <= 2 * STRICT["ping_interval_s"] + 0.5, f"noticed after {noticed:.2f} s"
            refused = g.enter("LE-DURING-GAP")
            assert refused.status != "accepted", "no entry while the user hub is down"
            price(sim, "6054.50")                         # the target fills during the gap
            wait_for(lambda: not positions(sim) and not working(sim), 15, what="flat at the broker")
            wait_for(lambda: [f.leg for f in g.fills()] == ["entry", "target"], 10, what="gap fill over REST")
            wait_for(lambda: g.status().get("entries_ok"), 20, what="hub rebuilt and reconciled")
            stats = sim.state()["stats"]
            assert stats["user_connects"] >= 4, "the silent one, two stopped after handshake, a good one"
            assert [f.leg for f in g.fills()] == ["entry", "target"], "nothing lost, nothing twice"
            assert not [o for o in sim.state()["orders"] if (o.get("customTag") or "").find("LE-DURING-GAP") >= 0]
            out = g.proc.output()
            assert "nothing from the server" in out
        finally:
            g.stop()


def test_tokens_expiring_mid_session_are_replaced_without_a_quote_gap_or_a_missed_fill(tmp_path):
    ttl = 8.0
    with SimProcess(tmp_path / "sim", speed=2, token_ttl_s=ttl, **STRICT) as sim:
        feed = Feed(tmp_path / "feed", sim)
        g = Gw(tmp_path / "gw", sim, api=HUB).start()
        try:
            feed.wait(lambda: len(feed.quotes) > 5, 20, "live quotes")
            t0 = time.monotonic()
            feed.watch(2.5 * ttl)                          # at least two token lifetimes
            stats = sim.state()["stats"]
            assert stats["market_connects"] >= 3 and stats["user_connects"] >= 3, "reconnected to refresh"
            assert involuntary(sim) == {k: 0 for k in involuntary(sim)}, "refreshed before the server closed"
            assert feed.max_gap(t0) <= 1.0, f"a quote gap of {feed.max_gap(t0):.2f} s"
            # a trade across refreshes: every fill reaches the gateway once
            sim.control("pause")
            price(sim, "6050.00")
            assert g.enter("LE-TOKEN").status == "accepted"
            wait_for(lambda: protected(sim), 10, what="bracket")
            time.sleep(ttl)                                # at least one refresh of the user hub
            price(sim, "6054.50")
            wait_for(lambda: not positions(sim) and not working(sim), 15, what="flat at the broker")
            wait_for(lambda: [f.leg for f in g.fills()] == ["entry", "target"], 10, what="both fills")
            assert involuntary(sim)["hub_token_expired"] == 0
        finally:
            g.stop()
            feed.stop()
