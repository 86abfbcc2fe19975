"""The broker's REST budget, shared by every process of this account and kept across restarts.

TopstepX counts REST calls per user, whichever process makes them (topstepx_api.md §1.5). So the
gateway and the keeper take their calls from one ledger: an SQLite file of call times in the
state directory. A restarted process sees the calls its predecessor made in the last minute, so
it never starts with a full budget the broker does not agree with. The last `reserve` calls of
the window are kept for urgent calls (protective orders, cancels, flatten): an urgent call is
made in a thread that has `urgent()` set.
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

_local = threading.local()


@contextlib.contextmanager
def urgent(on: bool = True):
    """Calls made in this block may use the reserve."""
    prev = getattr(_local, "urgent", False)
    _local.urgent = on
    try:
        yield
    finally:
        _local.urgent = prev


def is_urgent() -> bool:
    return getattr(_local, "urgent", False)


def budget_path(cfg) -> Path:
    """One file per broker user, in the state directory every service of the config shares."""
    user = "".join(ch if ch.isalnum() else "_" for ch in (cfg.api.username or "user"))
    return cfg.path(cfg.logging.dir) / "state" / f"rest_budget_{user}.sqlite"


class SharedBudget:
    """Sliding window over the calls of every process: at most `limit` calls in any `window_s`,
    of which the last `reserve` only for urgent calls. Same interface as rest.RateLimiter."""

    def __init__(self, path: str | Path, limit: int, window_s: float = 60.0, reserve: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self.window_s = window_s
        self.reserve = min(reserve, max(0, limit - 1))
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        # no fsync per call (it cost 0.5 to 4.7 ms before every order under load): WAL stays
        # consistent, and what a power loss could drop is a minute of history a reboot outlives
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-64")     # a few rows: SQLite's 2 MB default cache is memory for nothing
        self.db.execute("CREATE TABLE IF NOT EXISTS calls (t REAL)")
        self.db.execute("CREATE INDEX IF NOT EXISTS calls_t ON calls(t)")
        self.lock = threading.Lock()

    def _count(self, now: float) -> tuple[int, float]:
        """(calls in the window, time the oldest of them leaves it); inside a transaction."""
        self.db.execute("DELETE FROM calls WHERE t < ?", (now - self.window_s,))
        n, oldest = self.db.execute("SELECT COUNT(*), MIN(t) FROM calls").fetchone()
        return int(n), float(oldest or now)

    def free(self) -> int:
        """Calls left in the window for an ordinary call (the reserve not counted)."""
        with self.lock:
            n, _ = self._count(time.time())
        return self.limit - self.reserve - n

    def wait(self) -> float:
        cap = self.limit if is_urgent() else self.limit - self.reserve
        waited = 0.0
        while True:
            with self.lock:
                now = time.time()      # wall clock: the ledger is shared by processes
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    n, oldest = self._count(now)
                    if n < cap:
                        self.db.execute("INSERT INTO calls(t) VALUES (?)", (now,))
                        self.db.execute("COMMIT")
                        return waited
                    self.db.execute("COMMIT")
                except Exception:
                    self.db.execute("ROLLBACK")
                    raise
            pause = max(0.01, min(1.0, oldest + self.window_s - now))
            time.sleep(pause)
            waited += pause

    def close(self) -> None:
        self.db.close()
