"""Hop timestamps: where the time between a tick and an order goes, measured in production.

Every message envelope carries `hops`, a map of stage name -> wall time (ns). Each stage
adds its own on the way: the feed when a tick is received and published, the worker when
the bar closed, the features were done and the model scored, the engine when it decided,
the order gateway when the command arrived, the order went out and the broker answered.
The order gateway feeds every entry's hops into a HopStats; its heartbeat carries the
medians and p99s, which the position keeper writes into the metrics and the session report.
"""
from __future__ import annotations

import collections
import math
import statistics

# the stages in pipeline order; a segment is named after the stage it ends at
STAGES = ("tick_recv", "feed_pub", "bar_closed", "features_done", "model_scored", "engine",
          "cmd_recv", "order_sent", "order_ack")
SEGMENTS = {
    "feed_pub": "feed",                 # tick received -> published by the feed
    "bar_closed": "bar_wait",           # bus to the worker + waiting for the bar to close
    "features_done": "features",
    "model_scored": "inference",
    "engine": "signal",                 # bus to the engine + the decision
    "cmd_recv": "command",              # REQ to the order gateway
    "order_sent": "order_prep",         # gateway checks, journal, rate limit
    "order_ack": "broker_ack",          # REST round trip to the broker
}


def segments(hops: dict[str, int]) -> dict[str, int]:
    """Durations (ns) between consecutive stages present in `hops`, plus `total` from the
    first to the last. Stages missing from `hops` are skipped, not guessed."""
    present = [(s, hops[s]) for s in STAGES if isinstance(hops.get(s), int) and hops[s] > 0]
    out: dict[str, int] = {}
    for (_, a), (stage, b) in zip(present, present[1:]):
        out[SEGMENTS.get(stage, stage)] = b - a
    if len(present) >= 2:
        out["total"] = present[-1][1] - present[0][1]
    return out


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


class HopStats:
    """The last `window` hop chains, summarised per segment (microseconds)."""

    def __init__(self, window: int = 2000):
        self.samples: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=window))
        self.count = 0
        # the last few chains whole, for the dashboard's per-entry waterfall
        self.recent: collections.deque[dict[str, float]] = collections.deque(maxlen=10)

    def add(self, hops: dict[str, int]) -> dict[str, int]:
        segs = segments(hops)
        if segs:
            self.count += 1
            first = min(v for v in hops.values() if isinstance(v, int) and v > 0)
            self.recent.append({"at_ns": first, **{k: round(v / 1000, 1) for k, v in segs.items()}})
            for name, ns in segs.items():
                self.samples[name].append(ns / 1000)
        return segs

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: {"median_us": round(statistics.median(xs), 1), "p99_us": round(pct(list(xs), 99), 1),
                       "n": len(xs)}
                for name, xs in self.samples.items() if xs}

    def flat(self) -> dict[str, float]:
        """Heartbeat-friendly: hop_<segment>_us_p50 / _p99 numbers."""
        out: dict[str, float] = {}
        for name, s in self.summary().items():
            out[f"hop_{name}_us_p50"] = s["median_us"]
            out[f"hop_{name}_us_p99"] = s["p99_us"]
        return out

    def recent_list(self) -> list[dict[str, float]]:
        """The last entries' chains, oldest first: {"at_ns": first stage, segment: us, ...}."""
        return list(self.recent)
