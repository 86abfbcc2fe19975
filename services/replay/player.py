"""Recording -> the feed socket's message stream, with pacing. No sockets: `publish` and
`heartbeat` are injected, so tests and the simulator can drive it directly.

Every hub event goes through common.ticks.feed_core.FeedCore, the same path as the live
feed, with the recorded receive time, so two replays of a file produce the
same messages in the same order. Heartbeats are emitted at every whole second of
event time (exch_ns = that second), so downstream bars close on time through quiet
spells exactly as they do live. "#status" records become FeedStatus messages.

Pacing: speed N sleeps so that event time runs N times faster than wall time;
speed None ("max") sends as fast as allowed by `max_rate` messages per second, in
bursts of `burst` (documented flow-control choice: a rate cap plus the bus's 100k
high-water marks, rather than a handshake the subscribers would need to speak).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from common.messages import FeedStatus
from common.recording import STATUS, Record
from common.ticks.feed_core import FeedCore

SECOND = 1_000_000_000


@dataclass
class PlayStats:
    records: int = 0
    skipped: int = 0
    messages: int = 0
    heartbeats: int = 0
    wall_s: float = 0.0


class Player:
    def __init__(self, core: FeedCore, publish: Callable, heartbeat: Callable[[int], None], *,
                 speed: float | None = None, start_ns: int | None = None, end_ns: int | None = None,
                 max_rate: int = 50_000, burst: int = 500, gap_heartbeats: int = 10,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic):
        self.core = core
        self.publish = publish
        self.heartbeat = heartbeat
        self.speed = speed
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.max_rate = max_rate
        self.burst = burst
        self.gap_heartbeats = gap_heartbeats
        self.sleep = sleep
        self.monotonic = monotonic
        self.stats = PlayStats()
        self.now_ns = 0                # event time reached (the publisher's clock in replay)
        self._next_hb = 0
        self._last_hb = 0
        self._wall0: float | None = None
        self._ev0 = 0
        self._burst_n = 0
        self._burst_t: float | None = None

    def run(self, records: Iterable[Record]) -> PlayStats:
        t0 = self.monotonic()
        for rec in records:
            self.stats.records += 1
            if self.start_ns is not None and rec.recv_ns < self.start_ns:
                # warm the quote merge state, publish nothing
                if rec.target != STATUS:
                    self.core.normalizer.on_event(rec.target, rec.args, rec.recv_ns)
                self.stats.skipped += 1
                continue
            if self.end_ns is not None and rec.recv_ns > self.end_ns:
                break
            self._pace(rec.recv_ns)
            self._heartbeats_until(rec.recv_ns)
            self.now_ns = max(self.now_ns, rec.recv_ns)
            if rec.target == STATUS:
                state = str(rec.args[0]) if rec.args else "unknown"
                detail = str(rec.args[1]) if len(rec.args) > 1 else ""
                self.publish(FeedStatus(state, detail), key="feed", ts_ns=rec.recv_ns)
                self.stats.messages += 1
                continue
            self.stats.messages += self.core.on_event(rec.target, rec.args, rec.recv_ns,
                                                      hop_recv_ns=time.time_ns())
        if self.now_ns and self.now_ns > self._last_hb:
            self._emit_heartbeat(self.now_ns)
        self.stats.wall_s = self.monotonic() - t0
        return self.stats

    def _heartbeats_until(self, t_ns: int) -> None:
        if not self._next_hb:
            self._next_hb = (t_ns // SECOND + 1) * SECOND
            return
        emitted = 0
        while self._next_hb <= t_ns:
            if emitted >= self.gap_heartbeats:
                # long silence: jump to the last whole second before this record
                self._next_hb = max(self._next_hb, (t_ns // SECOND) * SECOND)
                self._emit_heartbeat(self._next_hb)
                self._next_hb += SECOND
                break
            self._emit_heartbeat(self._next_hb)
            self._next_hb += SECOND
            emitted += 1

    def _emit_heartbeat(self, exch_ns: int) -> None:
        self.now_ns = max(self.now_ns, exch_ns)
        self._last_hb = exch_ns
        self.heartbeat(exch_ns)
        self.stats.heartbeats += 1

    def _pace(self, t_ns: int) -> None:
        if self.speed is not None:
            if self._wall0 is None:
                self._wall0, self._ev0 = self.monotonic(), t_ns
                return
            due = self._wall0 + (t_ns - self._ev0) / SECOND / self.speed
            wait = due - self.monotonic()
            if wait > 0:
                self.sleep(wait)
            return
        if self._burst_t is None:
            self._burst_t = self.monotonic()
        self._burst_n += 1
        if self._burst_n >= self.burst:
            # a burst may not start before the previous one's share of time has passed
            due = self._burst_t + self._burst_n / self.max_rate
            now = self.monotonic()
            if due > now:
                self.sleep(due - now)
            self._burst_t = max(due, self.monotonic())
            self._burst_n = 0
