"""The shadow model's record: logs/shadow_<day>.csv, one line per bar with both models' calls."""
from __future__ import annotations

from common.clock import to_ny
from common.messages import ShadowPrediction


class ShadowLog:
    """logs/shadow_<day>.csv: one line per bar with both models' calls and the book (the input of
    services/modelctl/shadow.py, which computes agreement and would-be P&L for the report)."""

    COLUMNS = ("bar_start_ns", "contract", "close_ticks", "bid_ticks", "ask_ticks", "atr_ticks",
               "primary_version", "primary_direction", "primary_confidence", "primary_in_range",
               "shadow_version", "shadow_direction", "shadow_confidence", "shadow_in_range")

    def __init__(self, log_dir):
        self.dir = log_dir
        self.day = ""
        self.f = None

    def write(self, m: ShadowPrediction) -> None:
        day = to_ny(m.bar_start_ns).date().isoformat()
        if day != self.day:
            self.close()
            path = self.dir / f"shadow_{day}.csv"
            new = not path.exists()
            self.f = open(path, "a", buffering=1)
            if new:
                self.f.write(",".join(self.COLUMNS) + "\n")
            self.day = day
        self.f.write(f"{m.bar_start_ns},{m.contract},{m.close_ticks},{m.bid_ticks},{m.ask_ticks},{m.atr_ticks:.6f},"
                     f"{m.primary_version},{m.primary_direction},{m.primary_confidence:.6f},{int(m.primary_in_range)},"
                     f"{m.model_version},{m.direction},{m.confidence:.6f},{int(m.features_in_range)}\n")

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
