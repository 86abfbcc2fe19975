"""Which alert goes to which channel, and when: dedup, severity threshold, quiet hours, rate limit.

Pure: `route(alert, now)` and `tick(now)` return (channel, alert) pairs to deliver; time is
passed in. Nothing is dropped silently: an alert held by quiet hours or by a channel's rate
limit comes out later inside one digest message. CRITICAL goes out at once whatever the hour
or the bucket says (a position without a stop cannot wait for a token).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from services.alerts.alert import Alert, digest, rank
from services.alerts.dedup import Dedup
from services.alerts.quiet import QuietHours
from services.alerts.ratelimit import TokenBucket

CRITICAL = rank("CRITICAL")


@dataclass
class ChannelPolicy:
    name: str
    min_severity: str
    always: tuple[str, ...]
    bucket: TokenBucket
    held: list[Alert] = field(default_factory=list)         # over the rate limit, in order
    quiet_held: list[Alert] = field(default_factory=list)   # below the quiet-hours threshold

    def wants(self, alert: Alert) -> bool:
        return rank(alert.severity) >= rank(self.min_severity) or \
            any(fnmatch.fnmatchcase(alert.kind, k) for k in self.always)


@dataclass
class RouterStats:
    deduplicated: int = 0
    rate_held: int = 0
    quiet_held: int = 0
    digests: int = 0


class Router:
    def __init__(self, policies: list[ChannelPolicy], dedup: Dedup,
                 quiet: QuietHours | None = None, quiet_min_severity: str = "ERROR"):
        self.policies = policies
        self.dedup = dedup
        self.quiet = quiet
        self.quiet_min = rank(quiet_min_severity)
        self.stats = RouterStats()

    def route(self, alert: Alert, now_ns: int) -> list[tuple[str, Alert]]:
        if not self.dedup.fresh(alert.key, now_ns):
            self.stats.deduplicated += 1
            return []
        quiet = self.quiet is not None and self.quiet.active(now_ns)
        out: list[tuple[str, Alert]] = []
        for p in self.policies:
            if not p.wants(alert):
                continue
            sev = rank(alert.severity)
            if quiet and sev < self.quiet_min:
                p.quiet_held.append(alert)
                self.stats.quiet_held += 1
                continue
            if sev >= CRITICAL:
                p.bucket.take(now_ns)           # spend a token if there is one; send regardless
                out.append((p.name, alert))
            elif not p.held and p.bucket.take(now_ns):
                out.append((p.name, alert))
            else:                               # behind a backlog or out of tokens: keep the order
                p.held.append(alert)
                self.stats.rate_held += 1
        return out

    def tick(self, now_ns: int) -> list[tuple[str, Alert]]:
        """Release what was held: a rate-limit backlog when a token is back, quiet-hours
        holdings when the quiet hours are over."""
        out: list[tuple[str, Alert]] = []
        quiet = self.quiet is not None and self.quiet.active(now_ns)
        for p in self.policies:
            if not quiet and p.quiet_held:
                p.held.extend(p.quiet_held)
                p.quiet_held = []
            if p.held and p.bucket.take(now_ns):
                held, p.held = p.held, []
                if len(held) == 1:
                    out.append((p.name, held[0]))
                else:
                    self.stats.digests += 1
                    out.append((p.name, digest(held, "rate limit or quiet hours", now_ns)))
        return out

    def flush(self, now_ns: int) -> list[tuple[str, Alert]]:
        """Everything still held, as one digest per channel, whatever the hour or the bucket
        (the process is stopping)."""
        out: list[tuple[str, Alert]] = []
        for p in self.policies:
            held, p.held, p.quiet_held = p.held + p.quiet_held, [], []
            if held:
                out.append((p.name, held[0] if len(held) == 1 else digest(held, "shutdown", now_ns)))
        return out

    def pending(self) -> int:
        return sum(len(p.held) + len(p.quiet_held) for p in self.policies)
