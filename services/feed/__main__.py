"""Feed process: TopstepX market hub -> Quote/Trade/FeedStatus/Heartbeat on the feed socket.

    python -m services.feed --config config/live_trading.yaml

The hub client (common/topstepx/hub.py) reconnects with backoff and re-subscribes;
this process adds: the token refresh (reconnect before the JWT expires), the
staleness watchdog (no tick for feed.stale_after_s inside the session -> reconnect),
the raw recording (logs/ticks/) and the heartbeat every second.
"""
from __future__ import annotations

import sys
import time

from loguru import logger

from common.bus import Publisher, ServiceLoop
from common.clock import EventClock
from common.messages import FeedStatus
from common.service import boot
from common.session import SessionCalendar
from common.topstepx.hub import CONNECTED, CONNECTING, RECONNECTING, STOPPED, HubClient
from common.topstepx.rest import TopstepXClient
from common.recording import STATUS, DailyRecorder
from common.ticks.feed_core import FeedCore
from services.feed.config import FeedConfig

SERVICE = "feed"
FEED_STATE = {CONNECTING: "connecting", CONNECTED: "subscribed", RECONNECTING: "reconnecting", STOPPED: "down"}


class MarketFeed:
    def __init__(self, cfg, fcfg: FeedConfig, clock, loop: ServiceLoop, pub: Publisher):
        self.cfg, self.fcfg, self.clock, self.loop, self.pub = cfg, fcfg, clock, loop, pub
        self.contract = fcfg.contract or cfg.trading.contract
        self.rest = TopstepXClient.from_config(cfg.api)
        self.core = FeedCore(self.contract, self._publish, cross_tolerance_ticks=fcfg.cross_tolerance_ticks,
                             jump_ticks=fcfg.jump_ticks, jump_confirm=fcfg.jump_confirm)
        self.recorder = None
        if fcfg.record:
            directory = fcfg.record_dir or f"{cfg.logging.dir}/ticks"
            self.recorder = DailyRecorder(cfg.path(directory), self.contract)
        self.calendar = SessionCalendar.from_config(cfg.trading)
        self.state = "connecting"
        self.last_tick_mono = time.monotonic()
        self.token_lifetime_s = 0.0
        self.token_exp = 0.0
        self.last_token_reconnect = 0.0
        self.stale_reconnects = 0
        self.token_reconnects = 0
        self.hub = HubClient(cfg.api.market_hub_url, self._token, self._subscribe, {}, name="market",
                             on_state=self._on_state_thread, on_raw=self._on_raw_thread,
                             connect_timeout_s=fcfg.connect_timeout_s, min_backoff_s=fcfg.min_backoff_s,
                             max_backoff_s=fcfg.max_backoff_s)

    # -- hub threads -> loop -------------------------------------------
    def _on_raw_thread(self, target: str, args: list, recv_ns: int) -> None:
        self.loop.call_soon_threadsafe(lambda: self.on_event(target, args, recv_ns))

    def _on_state_thread(self, state: str, detail: str) -> None:
        self.loop.call_soon_threadsafe(lambda: self.on_state(FEED_STATE.get(state, state), detail))

    def _token(self) -> str:
        """Called by the hub thread before every connect: a token valid for a while."""
        reason = self.hub.last_reason
        if "401" in reason or "nauthorized" in reason:
            token = self.rest.login()           # the server refused the token: log in again
        else:
            token = self.rest.token()
        exp = self.rest.token_expires_at()
        if exp != self.token_exp:
            self.token_exp = exp
            self.token_lifetime_s = max(1.0, exp - time.time())
        return token

    def _subscribe(self, hub: HubClient) -> None:
        hub.send("SubscribeContractQuotes", [self.contract])
        hub.send("SubscribeContractTrades", [self.contract])

    # -- loop thread ---------------------------------------------------
    def _publish(self, msg, **kw) -> None:
        if isinstance(self.clock, EventClock):
            self.clock.advance(msg.exch_ns)
        self.pub.publish(msg, **kw)

    def on_event(self, target: str, args: list, recv_ns: int) -> None:
        if self.recorder is not None:
            try:
                self.recorder.write(recv_ns, target, args)
            except (OSError, TypeError, ValueError) as exc:
                self.recorder.errors += 1
                if self.recorder.errors == 1 or self.recorder.errors % 1000 == 0:
                    logger.error(f"FEED: cannot record to {self.recorder.directory}: {exc} "
                                 f"({self.recorder.errors} records lost)")
        if self.core.on_event(target, args, recv_ns):
            self.last_tick_mono = time.monotonic()

    def on_state(self, state: str, detail: str) -> None:
        if state == self.state and state != "reconnecting":
            return
        self.state = state
        line = f"FEED: market hub {state}" + (f" ({detail})" if detail else "")
        (logger.info if state == "subscribed" else logger.warning)(line)
        if state == "subscribed":
            self.last_tick_mono = time.monotonic()
        self.pub.publish(FeedStatus(state, detail), key="feed")
        if self.recorder is not None:
            self.recorder.write(time.time_ns(), STATUS, [state, detail])

    def every_second(self) -> None:
        now = time.monotonic()
        if self.recorder is not None:
            self.recorder.flush()
        # staleness watchdog
        silent = now - self.last_tick_mono
        if (self.hub.connected and silent > self.fcfg.stale_after_s and self._stale_check_applies()):
            self.stale_reconnects += 1
            self.on_state("stale", f"no tick for {silent:.1f} s")
            self.last_tick_mono = now
            self.hub.force_reconnect(f"stale: no tick for {silent:.1f} s")
        # token refresh: reconnect with a fresh token before the current one expires
        if self.token_exp and self.hub.connected:
            margin = min(self.fcfg.token_refresh_margin_s, self.token_lifetime_s / 4)
            left = self.token_exp - time.time()
            if left < margin and now - self.last_token_reconnect > max(1.0, margin / 2):
                self.last_token_reconnect = now
                self.token_reconnects += 1
                self.rest.refresh_margin_s = max(self.rest.refresh_margin_s, margin + 1)
                logger.info(f"FEED: token expires in {left:.0f} s; reconnecting with a fresh one")
                self.hub.force_reconnect("token refresh")
        exch = self.core.market_time(time.time_ns(), self.fcfg.heartbeat_lag_ms * 1_000_000) \
            if self.hub.connected else self.core.last_exch_ns
        if isinstance(self.clock, EventClock) and exch:
            self.clock.advance(exch)
        stats = self.core.stats()
        stats.update({"feed_state": self.state, "hub": dict(self.hub.stats),
                      "stale_reconnects": self.stale_reconnects, "token_reconnects": self.token_reconnects,
                      "recorded": self.recorder.writer.records if self.recorder and self.recorder.writer else 0})
        self.pub.heartbeat("ok" if self.state == "subscribed" else "degraded", exch_ns=exch, stats=stats)

    def _stale_check_applies(self) -> bool:
        mode = self.fcfg.stale_check
        if mode == "never":
            return False
        if mode == "always":
            return True
        return self.calendar.phase(time.time_ns()) in ("open", "no_new_entries", "flatten")

    def shutdown(self) -> None:
        self.hub.stop()
        self.pub.publish(FeedStatus("down", "feed stopped"), key="feed")
        if self.recorder is not None:
            self.recorder.close()
        self.rest.close()


def main(argv: list[str] | None = None) -> int:
    cfg, fcfg, clock = boot(SERVICE, FeedConfig, argv, __doc__)
    loop = ServiceLoop(SERVICE)
    try:
        pub = Publisher(SERVICE, cfg.bus.feed_pub, cfg.bus.feed_snap).attach(loop)
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2
    feed = MarketFeed(cfg, fcfg, clock, loop, pub)
    logger.info(f"FEED: {feed.contract} from {cfg.api.market_hub_url} -> {cfg.bus.feed_pub}"
                + (f"; recording to {feed.recorder.directory}" if feed.recorder else ""))
    feed.on_state("connecting", "starting")
    loop.every(fcfg.heartbeat_s, feed.every_second)
    loop.on_shutdown(feed.shutdown)
    loop.on_shutdown(pub.close)
    feed.hub.start()
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
