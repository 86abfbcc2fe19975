"""Deduplication: the same alert key again within a window is suppressed and counted.

The caller chooses the key: a breaker that trips, clears and trips again is three different
alerts (the key holds the transition number); a gateway re-reporting the same failed flatten
every second is one.

What was sent is kept in a small file, so a restart of the alerts process does not send it
again: its subscriptions replay the retained risk events and the day's round trips, and the
rules would otherwise repeat the end-of-day result and summary, or a loss warning. Keys of
once-a-day alerts (`ONCE_A_DAY`) are kept for days, whatever the window. The file is a cache:
if it cannot be read the process says so in one line and starts empty (at worst a repeat),
because an alerting process must never refuse to alert.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from loguru import logger

ONCE_A_DAY = ("summary:", "eod:", "losswarn:")
KEEP_ONCE_NS = 4 * 86_400 * 10**9


class Dedup:
    def __init__(self, window_s: float, path: str | Path | None = None):
        self.window_ns = int(window_s * 1e9)
        self.path = Path(path) if path else None
        self.last: dict[str, int] = {}
        self.suppressed = 0
        if self.path is not None:
            self.last = self._load(self.path)

    def fresh(self, key: str, now_ns: int) -> bool:
        """True when `key` was not let through within the window (and remember it now)."""
        prev = self.last.get(key)
        if prev is not None and (now_ns - prev < self.window_ns or key.startswith(ONCE_A_DAY)):
            self.suppressed += 1
            return False
        self.last[key] = now_ns
        self._prune(now_ns)
        self._save()
        return True

    def _prune(self, now_ns: int) -> None:
        cutoff, once_cutoff = now_ns - self.window_ns, now_ns - KEEP_ONCE_NS
        if len(self.last) > 1000 or any(t < once_cutoff for t in self.last.values()):
            self.last = {k: t for k, t in self.last.items()
                         if t >= (once_cutoff if k.startswith(ONCE_A_DAY) else cutoff)}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.last))
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.warning(f"ALERT: cannot keep the sent-alerts file {self.path}: {exc.strerror or exc}; "
                           "a restart may repeat the last alerts")

    @staticmethod
    def _load(path: Path) -> dict[str, int]:
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
                raise ValueError("not a map of alert keys to times")
            return {str(k): v for k, v in data.items()}
        except (OSError, ValueError) as exc:
            logger.warning(f"ALERT: the sent-alerts file {path} is unreadable ({exc}); starting empty, "
                           "so the last alerts may be sent again")
            return {}
