"""Delivery off the bus loop: one thread and one queue per channel.

`submit` never blocks (a full queue drops its oldest alert, logged). The thread sends, and on
a failure retries with doubling backoff (or the receiver's Retry-After) up to `attempts`
times, then logs the alert as lost. A channel that is down delays only itself; nothing here
raises into the caller.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable

from loguru import logger

from services.alerts.alert import Alert
from services.alerts.channel import Channel, DeliveryError
from services.alerts.config import DeliveryConfig


@dataclass
class CourierStats:
    sent: int = 0
    failed_attempts: int = 0
    lost: int = 0
    dropped: int = 0           # pushed out of a full queue
    last_ok_ns: int = 0
    last_error: str = ""


class Courier:
    def __init__(self, channel: Channel, cfg: DeliveryConfig,
                 on_sent: Callable[[str, Alert], None] | None = None,
                 sleep: Callable[[float], None] | None = None):
        self.channel, self.cfg = channel, cfg
        self.on_sent = on_sent
        self.queue: collections.deque[Alert] = collections.deque()
        self.cv = threading.Condition()
        self.stats = CourierStats()
        self.stopping = False
        self._sleep = sleep
        self.thread = threading.Thread(target=self._run, name=f"alerts-{channel.name}", daemon=True)

    def start(self) -> "Courier":
        self.thread.start()
        return self

    def submit(self, alert: Alert) -> None:
        with self.cv:
            if len(self.queue) >= self.cfg.queue:
                old = self.queue.popleft()
                self.stats.dropped += 1
                logger.error(f"ALERT: {self.channel.name} queue full ({self.cfg.queue}); dropped {old.line()}")
            self.queue.append(alert)
            self.cv.notify()

    def pending(self) -> int:
        with self.cv:
            return len(self.queue)

    def stop(self, timeout_s: float = 3.0) -> None:
        """Let the queue drain for up to `timeout_s`, then give up (the thread is a daemon)."""
        end = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < end and self.thread.is_alive():
            time.sleep(0.05)
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        self.thread.join(max(0.0, end - time.monotonic()))
        if self.queue:
            logger.warning(f"ALERT: {self.channel.name}: {len(self.queue)} alerts not delivered at shutdown")

    def _wait(self, seconds: float) -> bool:
        """Sleep between attempts; False when asked to stop meanwhile."""
        if self._sleep is not None:
            self._sleep(seconds)
            return not self.stopping
        with self.cv:
            self.cv.wait_for(lambda: self.stopping, timeout=seconds)
            return not self.stopping

    def _run(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.queue or self.stopping)
                if self.stopping:
                    return
                alert = self.queue[0]
            self._deliver(alert)
            with self.cv:
                if self.queue and self.queue[0] is alert:
                    self.queue.popleft()

    def _deliver(self, alert: Alert) -> None:
        delay = self.cfg.backoff_s
        for attempt in range(1, self.cfg.attempts + 1):
            try:
                self.channel.send(alert)
            except DeliveryError as exc:
                self.stats.failed_attempts += 1
                self.stats.last_error = str(exc)
                last = attempt == self.cfg.attempts or not exc.retry
                if last:
                    self.stats.lost += 1
                    logger.error(f"ALERT: {self.channel.name} failed ({exc}) after {attempt} attempt(s); "
                                 f"not delivered: {alert.line()}")
                    return
                pause = min(exc.retry_after_s if exc.retry_after_s is not None else delay, self.cfg.backoff_max_s)
                logger.warning(f"ALERT: {self.channel.name} failed ({exc}); retry {attempt}/{self.cfg.attempts - 1} "
                               f"in {pause:.1f} s")
                delay = min(delay * 2, self.cfg.backoff_max_s)
                if not self._wait(pause):
                    return
                continue
            except Exception as exc:  # a channel bug must not kill its thread
                self.stats.lost += 1
                logger.exception(f"ALERT: {self.channel.name} crashed sending ({type(exc).__name__}); "
                                 f"not delivered: {alert.line()}")
                return
            self.stats.sent += 1
            self.stats.last_ok_ns = time.time_ns()
            logger.info(f"ALERT: {self.channel.name} delivered {alert.kind} ({alert.severity})")
            if self.on_sent is not None:
                self.on_sent(self.channel.name, alert)
            return
