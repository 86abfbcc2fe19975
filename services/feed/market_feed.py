"""The feed: TopstepX market hub -> Quote/Trade/FeedStatus/Heartbeat on the feed socket.

The hub client (common/topstepx/hub.py) reconnects with backoff and re-subscribes; this
adds the watchdog and token refresh (watchdog.py), the raw recording (logs/ticks/) and
the heartbeat every second.
"""
from __future__ import annotations

import time

from loguru import logger

from common.bus import Publisher, ServiceLoop
from common.clock import EventClock
from common.messages import FeedStatus
from common.session import SessionCalendar
from common.topstepx.hub import CONNECTED, CONNECTING, RECONNECTING, STOPPED, HubClient, hub_timing
from common.topstepx.rest import TopstepXClient
from services.feed.config import FeedConfig
from common.ticks.feed_core import FeedCore
from services.feed.watchdog import StaleWatchdog, TokenRefresher, needs_login
from common.recording import STATUS, DailyRecorder

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
        # load the exchange calendar now: its first use takes a second or more, which at the
        # watchdog's first check would delay the stale trip by as much
        self.calendar.phase(time.time_ns())
        self.state = "connecting"
        self.watchdog = StaleWatchdog(fcfg.stale_after_s, fcfg.stale_check, self.calendar.phase)
        self.watchdog.fresh(time.monotonic())
        self.tokens = TokenRefresher(fcfg.token_refresh_margin_s)
        self._unrecorded: list[tuple[int, str, list]] = []    # published, recorded at the frame's end
        self.hub = HubClient(cfg.api.market_hub_url, self._token, self._subscribe, {}, name="market",
                             on_state=self._on_state_thread, on_raw=self._on_raw_thread,
                             on_frame_end=self._on_frame_end_thread,
                             connect_timeout_s=fcfg.connect_timeout_s, min_backoff_s=fcfg.min_backoff_s,
                             max_backoff_s=fcfg.max_backoff_s, **hub_timing(cfg.api))

    # -- hub threads -> loop -------------------------------------------
    # run on the hub's receive thread under the loop's lock when the loop is idle: handing each
    # quote to the loop thread cost a second wake-up, the feed's p99 (ServiceLoop.run_threadsafe)
    def _on_raw_thread(self, target: str, args: list, recv_ns: int) -> None:
        self.loop.run_threadsafe(lambda: self.on_event(target, args, recv_ns))

    def _on_frame_end_thread(self) -> None:
        self.loop.run_threadsafe(self.record_pending)

    def _on_state_thread(self, state: str, detail: str) -> None:
        self.loop.run_threadsafe(lambda: self.on_state(FEED_STATE.get(state, state), detail))

    def _token(self) -> str:
        """Called by the hub thread before every connect: a token valid for a while."""
        token = self.rest.login() if needs_login(self.hub.last_reason) else self.rest.token()
        self.tokens.on_token(self.rest.token_expires_at(), time.time())
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
        """Publish now, record once the hub's frame is all published (record_pending): the last
        quote of a burst (up to 90 events a frame) waits for everything done before it."""
        if self.core.on_event(target, args, recv_ns):
            self.watchdog.fresh(time.monotonic())
        if self.recorder is not None:
            self._unrecorded.append((recv_ns, target, args))

    def record_pending(self) -> None:
        """Write the events published since the last call, in order; called at the end of each hub
        frame, and before a status record, the per-second flush and the shutdown."""
        pending, self._unrecorded = self._unrecorded, []
        for recv_ns, target, args in pending:
            try:
                self.recorder.write(recv_ns, target, args)
            except (OSError, TypeError, ValueError) as exc:
                self.recorder.errors += 1
                if self.recorder.errors == 1 or self.recorder.errors % 1000 == 0:
                    logger.error(f"FEED: cannot record to {self.recorder.directory}: {exc} "
                                 f"({self.recorder.errors} records lost)")

    def on_state(self, state: str, detail: str) -> None:
        if state == self.state and state != "reconnecting":
            return
        self.state = state
        line = f"FEED: market hub {state}" + (f" ({detail})" if detail else "")
        (logger.info if state == "subscribed" else logger.warning)(line)
        if state == "subscribed":
            self.watchdog.fresh(time.monotonic())
        self.pub.publish(FeedStatus(state, detail), key="feed")
        if self.recorder is not None:
            self.record_pending()
            self.recorder.write(time.time_ns(), STATUS, [state, detail])

    def watch(self) -> None:
        """The stale watchdog and the token refresh; run every feed.watchdog_s."""
        now = time.monotonic()
        silent = self.watchdog.check(now, self.clock.now_ns(), self.hub.connected)
        if silent is not None:
            self.on_state("stale", f"no tick for {silent:.1f} s")
            self.hub.force_reconnect(f"stale: no tick for {silent:.1f} s")
        left = self.tokens.due(now, time.time(), self.hub.connected)
        if left is not None:
            self.rest.refresh_margin_s = max(self.rest.refresh_margin_s, self.tokens.margin() + 1)
            logger.info(f"FEED: token expires in {left:.0f} s; reconnecting with a fresh one")
            self.hub.force_reconnect("token refresh")

    def every_second(self) -> None:
        if self.recorder is not None:
            self.record_pending()
            self.recorder.flush()
        exch = self.core.market_time(time.time_ns(), self.fcfg.heartbeat_lag_ms * 1_000_000) \
            if self.hub.connected else self.core.last_exch_ns
        if isinstance(self.clock, EventClock) and exch:
            self.clock.advance(exch)
        stats = self.core.stats()
        stats.update({"feed_state": self.state, "hub": dict(self.hub.stats),
                      "stale_reconnects": self.watchdog.trips, "token_reconnects": self.tokens.refreshes,
                      "recorded": self.recorder.writer.records if self.recorder and self.recorder.writer else 0})
        if self.loop.hot is not None:       # the longest gc pause so far (bench_feed reports it)
            stats["hotpath"] = dict(self.loop.hot.stats)
        self.pub.heartbeat("ok" if self.state == "subscribed" else "degraded", exch_ns=exch, stats=stats)

    def shutdown(self) -> None:
        self.hub.stop()
        self.pub.publish(FeedStatus("down", "feed stopped"), key="feed")
        if self.recorder is not None:
            self.record_pending()
            self.recorder.close()
        self.rest.close()
