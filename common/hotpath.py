"""Keep a service's hot path short at the live cadence: a bar closes once a second and
everything between bars goes cold, and the garbage collector may run in the middle of a bar.

Two policies, applied by ServiceLoop (config section `hotpath:`, common/config.py HotPathConfig):

- Garbage collection off the hot path. Once the service has started, `gc.freeze()` moves
  every object alive then (config, model, tables) out of the collector's sight, so a full
  collection later scans only what was made since. Automatic collections are switched off;
  the loop collects the young generations when it is idle (a poll that found nothing to do)
  and outside the warm window, a full collection at most every `gc_full_every_s`. A process
  that is never idle still collects once `gc_young_limit` new objects pile up, so memory
  stays bounded whatever the load.
- Warm around the bar boundary. From `warm_before_ms` before each bar boundary until
  `warm_after_ms` after the tick that closes the bar, the loop runs its warm-up calls (a codec
  round trip; a service adds its own, e.g. the inference worker scores its last features) every
  `warm_every_ms`, and polls without sleeping in between, so the tick that closes the bar finds
  a running thread with warm caches instead of one waking from a 100 ms sleep.
  The boundaries are the market's: a bar closes when the first tick past its end arrives, a few
  to tens of ms after the exchange's second on a live feed, and at any phase of this box's
  second in the simulator. Measured before this: with windows on this box's second, none of
  the pipeline's bars (0 of 1,100) landed in one. So a service that sees the feed calls
  `observe_market(exch_ns)` with every feed message, and its window follows the market:
  - the one that computes the bar on the tick that closes it (the inference worker,
    `wait_for_close()`) is warm and busy-polls from `warm_before_ms` before the market's
    boundary (the exchange clock, estimated from the last tick at 1x) until that tick comes,
    at most `warm_max_ms` past the boundary: at most (warm_before_ms + warm_max_ms) / bar_s
    of a core, 5.2 % with the defaults; with a tick every 50 ms, ~3.5 %;
  - the others (the engine, the order gateway) see the closing tick when the worker does, and
    collect no garbage for `warm_after_ms` after it, while the prediction and the command
    travel. They neither busy-poll nor warm up: measured on 2 cores, three processes spinning
    at the same moment starved the bus's I/O threads (the engine's hop went from 0.5 to
    5.7 ms), and a warm-up run once on the closing tick, ~1.5 ms before the command came,
    left the gateway's command -> order on the wire where it was (~450 µs).
  A feed not at the live pace (a replay, a fast simulator) turns the waiting off: it would only
  spin. A market with no tick for `QUIET_S` waits for no closing tick. A service that never
  sees the feed keeps its windows on the wall clock's second. warm_before_ms: 0 turns it all off.

- The GIL hand-over. A thread that holds the GIL (a SignalR thread parsing WebSocket frames
  in Python) keeps the loop thread waiting for up to the switch interval, 5 ms in CPython,
  after the loop was told there is work. `switch_interval_ms` (0.5) bounds that wait. The
  feed no longer hands its quotes over at all (ServiceLoop.run_threadsafe runs them on the
  hub thread): on a busy box the loop thread's wake-up itself cost milliseconds.

Pure logic and the gc module only: no sockets, so it is unit-tested on its own.
"""
from __future__ import annotations

import gc
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable

from common.config import HotPathConfig
from common.messages import Quote, decode, encode

_SAMPLE = Quote("WARM", 1, 2, 1, 1, 1)
QUIET_S = 5.0            # no tick for this long: the market is quiet, no closing tick is waited for
PACE_TOLERANCE = 0.05    # the exchange clock runs within 5 % of the wall clock's pace: a live feed


def codec_round_trip() -> None:
    """Warm the codec's code and caches: one encode + decode of a small message."""
    decode(encode(_SAMPLE, seq=1, ts_ns=1, src="warm"))


class HotPath:
    def __init__(self, cfg: HotPathConfig, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.wall, self.mono = wall, mono
        self.warmers: list[Callable[[], None]] = [codec_round_trip]
        self.idle_tasks: list[list] = []          # [fn, every_s, next due (monotonic)]
        self.started = False
        self._warmed = -1                 # index of the boundary last warmed up for
        self._next_full = 0.0
        self._last_warm = 0.0
        self._trace: _TraceProbe | None = None
        # the market's clock, from observe_market (None: never seen; the wall clock's second)
        self._offset: float | None = None          # exchange time - wall time at the last tick, s
        self._tick_bar = -1                        # bar index of the latest exchange time seen
        self._closed_wall = 0.0                    # wall time the latest bar-closing tick arrived
        self._seen_wall = 0.0                      # wall time of the latest tick
        self._pace = (0.0, 0.0)                    # (wall, offset) a second ago: is the feed at 1x?
        self._live_pace = True
        self._waits = False                        # warm before the boundary until the closing tick
        self._close_in_window = False              # the latest closing tick came inside the window
        self.stats = {"gc_young": 0, "gc_full": 0, "gc_forced_busy": 0, "gc_max_ms": 0.0, "warm_windows": 0,
                      "warm_errors": 0}

    @property
    def warm_on(self) -> bool:
        return self.cfg.warm_before_ms > 0

    def add_idle_task(self, fn: Callable[[], None], every_s: float) -> None:
        """Housekeeping that must not run mid-bar (an SQLite WAL checkpoint, a flush): run at most
        every `every_s`, only when the loop is idle and outside the warm window."""
        self.idle_tasks.append([fn, every_s, self.mono() + every_s])

    def add_warmer(self, fn: Callable[[], None]) -> None:
        """A call that exercises the service's per-bar path without changing its state."""
        self.warmers.append(fn)

    # -- garbage collection ------------------------------------------------
    def start(self, name: str = "service") -> None:
        """Once the service is up: collect what start-up left, freeze the rest, and take the
        collector's timing over."""
        if self.started:
            return
        self.started = True
        self._trace = _TraceProbe(name) if os.environ.get("SCALPER_TRACEMALLOC") else None
        if self._trace is not None:       # written every 30 s too: a process killed at stop still reports
            self.add_idle_task(self._trace.write, 30.0)
        sys.setswitchinterval(self.cfg.switch_interval_ms / 1000)
        gc.collect()
        if self.cfg.gc_freeze:
            gc.freeze()
        if self.cfg.gc_on_idle:
            gc.disable()
        self._next_full = self.mono() + self.cfg.gc_full_every_s

    def stop(self) -> None:
        if self.started and self.cfg.gc_on_idle:
            gc.enable()
        if self.started and self._trace is not None:
            self._trace.write()

    def after_poll(self, had_events: bool) -> None:
        """Called by the loop after each poll: collect when idle and outside the warm window,
        or when too many new objects piled up whatever the load."""
        if not self.started:
            return
        quiet = self.quiet()
        if self.idle_tasks and not had_events and not quiet:
            self._idle_tasks()
        if not self.cfg.gc_on_idle:
            return
        young = gc.get_count()[0]
        now = self.mono()
        if had_events or quiet:
            if now >= self._next_full + self.cfg.gc_full_every_s:
                # never idle for two periods (a replay at full speed): the old generation must
                # still be collected, or cyclic garbage promoted there piles up for ever
                self._next_full = now + self.cfg.gc_full_every_s
                self.stats["gc_full_forced_busy"] = self.stats.get("gc_full_forced_busy", 0) + 1
                self._collect(2)
            elif young > self.cfg.gc_young_limit:
                self.stats["gc_forced_busy"] += 1
                self._collect(1)
            return
        if now >= self._next_full:
            self._next_full = now + self.cfg.gc_full_every_s
            self.stats["gc_full"] += 1
            self._collect(2)
        elif young > 700:                   # CPython's own gen-0 threshold
            self.stats["gc_young"] += 1
            self._collect(1 if gc.get_count()[1] >= 10 else 0)

    def _idle_tasks(self) -> None:
        now = self.mono()
        for task in self.idle_tasks:
            fn, every, due = task
            if now >= due:
                task[2] = now + every
                try:
                    fn()
                except Exception:
                    self.stats["idle_task_errors"] = self.stats.get("idle_task_errors", 0) + 1

    def _collect(self, generation: int) -> None:
        t0 = time.perf_counter()
        gc.collect(generation)
        self.stats["gc_max_ms"] = max(self.stats["gc_max_ms"], round((time.perf_counter() - t0) * 1000, 3))

    # -- the bar boundary --------------------------------------------------
    def bar_event(self) -> None:
        """The service's per-bar work ran now (the worker closed a bar, the engine read its
        prediction, the gateway took an entry). Counted as warm or cold by whether it landed in the
        warm window, so a heartbeat shows whether the warm-up meets the bars it is for."""
        warm = self._close_in_window if self._waits else self.quiet()
        key = "bars_warm" if warm else "bars_cold"
        self.stats[key] = self.stats.get(key, 0) + 1

    def wait_for_close(self) -> None:
        """This service computes the bar on the tick that closes it (the inference worker): be
        warm before the market's boundary and until that tick arrives, not only after it."""
        self._waits = True

    def observe_market(self, exch_ns: int, tick: bool = True) -> None:
        """A feed message's exchange time (ns): the window follows the market's bars from now on.
        `tick=False` for the feed's heartbeat: it may close a bar, but its time is an estimate
        held back by the feed's lag (250 ms), so the market clock is read from ticks only."""
        if exch_ns <= 0:
            return
        wall = self.wall()
        t = exch_ns / 1e9
        offset = t - wall
        if tick and self._offset is None:
            self._pace = (wall, offset)
        elif tick and wall - self._pace[0] >= 1.0:    # at 1x the offset only moves by the feed's jitter
            self._live_pace = abs(offset - self._pace[1]) < PACE_TOLERANCE * (wall - self._pace[0])
            self._pace = (wall, offset)
        bar = math.floor(t / self.cfg.bar_s)
        if bar > self._tick_bar:
            if self._tick_bar >= 0:
                self._close_in_window = self.in_window(wall)    # was the loop warm for it?
                self._closed_wall = wall           # this tick closed the bar before it
            self._tick_bar = bar
        if tick:
            self._offset, self._seen_wall = offset, wall

    def _boundaries(self, now: float) -> tuple[float, float]:
        bar = self.cfg.bar_s
        return math.floor(now / bar) * bar, math.ceil(now / bar) * bar

    def _market(self, now: float) -> float:
        """This box's wall time `now` as the market's time (itself, before the feed was seen)."""
        return now if self._offset is None else now + self._offset

    def quiet(self, now: float | None = None) -> bool:
        """No garbage collection and no housekeeping now: inside the warm window, or within
        warm_after_ms of the tick that closed a bar (the bar's work is still travelling)."""
        now = self.wall() if now is None else now
        return self.in_window(now) or (self.warm_on and (now - self._closed_wall) * 1000 < self.cfg.warm_after_ms)

    def in_window(self, now: float | None = None) -> bool:
        """Warm and busy-polling now."""
        if not self.warm_on:
            return False
        now = self.wall() if now is None else now
        if self._offset is None:                   # no feed: windows on this box's second
            last, nxt = self._boundaries(now)
            return (now - last) * 1000 < self.cfg.warm_after_ms or (nxt - now) * 1000 < self.cfg.warm_before_ms
        if not (self._waits and self._live_pace):
            return False
        m = now + self._offset
        last, nxt = self._boundaries(m)
        if (nxt - m) * 1000 < self.cfg.warm_before_ms:
            return True
        waiting = self._tick_bar < round(last / self.cfg.bar_s) and now - self._seen_wall < QUIET_S
        return waiting and (m - last) * 1000 < self.cfg.warm_max_ms

    def wait_ms(self, wait: int) -> int:
        """The loop's poll timeout: `wait`, cut short so the loop is awake for the warm window;
        0 (poll without sleeping) inside it, after running the warm-up calls once."""
        if not self.warm_on:
            return wait
        now = self.wall()
        if self.in_window(now):
            self._warm(now)
            return 0
        if self._offset is not None and not (self._waits and self._live_pace):
            return wait                            # the closing tick itself wakes the loop
        m = self._market(now)
        _, nxt = self._boundaries(m)
        until = (nxt - m) * 1000 - self.cfg.warm_before_ms
        return max(0, min(wait, int(until)))

    def _warm(self, now: float) -> None:
        """Run the warm-up calls at the window's start and again every warm_every_ms inside it:
        measured here, a model call 2 ms after a warm-up is already half cold again."""
        idx = round(self._market(now) / self.cfg.bar_s)     # the boundary this window is around
        if idx == self._warmed and (now - self._last_warm) * 1000 < self.cfg.warm_every_ms:
            return
        if idx != self._warmed:
            self.stats["warm_windows"] += 1
        self._warmed, self._last_warm = idx, now
        for fn in self.warmers:
            try:
                fn()
            except Exception:                      # a warm-up must never hurt the service
                self.stats["warm_errors"] += 1


class _TraceProbe:
    """A memory probe for finding what grows (SCALPER_TRACEMALLOC=DIR): tracemalloc from the
    loop's start; at the end, DIR/NAME-PID.txt lists the allocation sites that grew most. Off
    by default (tracemalloc slows every allocation)."""

    def __init__(self, name: str):
        self.path = Path(os.environ["SCALPER_TRACEMALLOC"]) / f"{name}-{os.getpid()}.txt"
        tracemalloc.start(8)
        self.first = tracemalloc.take_snapshot()
        self.t0 = time.monotonic()

    def write(self) -> None:
        gc.collect()
        stats = tracemalloc.take_snapshot().compare_to(self.first, "traceback")
        lines = [f"{time.monotonic() - self.t0:.0f} s; traced now {tracemalloc.get_traced_memory()[0] / 2**20:.2f} MB"]
        for st in stats[:15]:
            lines.append(f"{st.size_diff / 1024:+.1f} KiB, {st.count_diff:+d} blocks")
            lines.extend(f"    {ln}" for ln in st.traceback.format()[-8:])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines) + "\n")


_PROCESS: HotPath | None = None


def install(cfg: HotPathConfig) -> HotPath:
    """The process's hot-path policy (common.service.boot installs it from the config); every
    ServiceLoop made afterwards applies it when it runs."""
    global _PROCESS
    _PROCESS = HotPath(cfg)
    return _PROCESS


def current() -> HotPath | None:
    return _PROCESS
