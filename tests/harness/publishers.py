"""Real bus publishers standing in for pipeline services in a test: each a common.bus
Publisher on its configured endpoints, served by a ServiceLoop on a background thread, so
snapshot requests are answered as the real services answer them. The test thread hands
messages over with `publish`; heartbeats go out every `beat_s` with the stats it sets (a callable value is called at
each beat, e.g. a counter that moves)."""
from __future__ import annotations

import threading
import time
from typing import Any

from common.bus import Publisher, ServiceLoop


class Publishers:
    def __init__(self, cfg, names: tuple[str, ...], beat_s: float = 0.25):
        self.loop = ServiceLoop("test-publishers")
        self.pubs = {n: Publisher(n, getattr(cfg.bus, f"{n}_pub"), getattr(cfg.bus, f"{n}_snap", None)).attach(self.loop)
                     for n in names}
        self.stats: dict[str, dict[str, Any]] = {n: {} for n in names}
        self.beating = True
        self.loop.every(beat_s, self._beat, first_in=0.0)
        self.thread = threading.Thread(target=self.loop.run, name="test-publishers", daemon=True)

    def _beat(self) -> None:
        if not self.beating:
            return
        for n, p in self.pubs.items():
            p.heartbeat("ok", stats={k: v() if callable(v) else v for k, v in self.stats[n].items()})

    def publish(self, service: str, msg: Any, key: str | None = None) -> int:
        """Publish on the loop's thread (a zmq socket belongs to one thread); returns the wall
        time (ns) taken just before the send."""
        done = threading.Event()
        at = [0]

        def send():
            at[0] = time.time_ns()
            self.pubs[service].publish(msg, key=key)
            done.set()
        self.loop.call_soon_threadsafe(send)
        if not done.wait(5):
            raise AssertionError(f"publisher loop did not publish {type(msg).__name__} in 5 s")
        return at[0]

    def __enter__(self) -> "Publishers":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.loop.stop("test over")
        self.thread.join(5)
        for p in self.pubs.values():
            p.close()
