"""Counting exits: when one program exits `max_exits` times within `window_s`, it is in a
crash loop and must stop being restarted. Pure logic; time is passed in (seconds)."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class CrashWatch:
    max_exits: int
    window_s: float
    exits: dict[str, collections.deque] = field(default_factory=lambda: collections.defaultdict(collections.deque))
    stopped: dict[str, str] = field(default_factory=dict)      # program -> why it was stopped
    total: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))

    def on_exit(self, name: str, now: float) -> bool:
        """A program exited (or failed to start). True: this exit completes a crash loop."""
        times = self.exits[name]
        times.append(now)
        self.total[name] += 1
        self._expire(name, now)
        if len(times) >= self.max_exits and name not in self.stopped:
            self.stopped[name] = (f"{name} exited {len(times)} times in {(now - times[0]) / 60:.1f} min "
                                  f"(limit {self.max_exits} in {self.window_s / 60:g} min)")
            return True
        return False

    def on_running(self, name: str) -> bool:
        """The operator started a stopped program again. True if it was stopped for a crash loop;
        its exits stay counted, so one more crash inside the window stops it again."""
        if name in self.stopped:
            del self.stopped[name]
            if self.exits[name]:
                self.exits[name].popleft()      # the next crash inside the window stops it again
            return True
        return False

    def counts(self, now: float) -> dict[str, int]:
        """Exits per program within the window."""
        for name in list(self.exits):
            self._expire(name, now)
        return {n: len(t) for n, t in sorted(self.exits.items()) if t}

    def detail(self) -> str:
        """The crash-loop breaker's text: every program stopped for looping, and the way out."""
        return "; ".join(f"{why}; supervisord no longer restarts it: fix the cause, then "
                         f"`supervisorctl -c supervisord.conf start {name}`" for name, why in sorted(self.stopped.items()))

    def _expire(self, name: str, now: float) -> None:
        times = self.exits[name]
        while times and times[0] <= now - self.window_s:
            times.popleft()


def position_text(positions: dict[str, tuple[int, int]]) -> str:
    """{'CON.F.US.MES.H26': (+1, 2)} -> 'LONG 2 CON.F.US.MES.H26'; '' when flat."""
    return ", ".join(f"{'LONG' if d > 0 else 'SHORT'} {s} {c}" for c, (d, s) in sorted(positions.items()) if d and s)
