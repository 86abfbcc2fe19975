"""What grows: a short, cheap cousin of the soak (tests/integration/test_soak.py) with the
tracemalloc probe on (common/hotpath.py, SCALPER_TRACEMALLOC).

The pipeline runs against the simulator at high speed for --seconds of wall time; each process's
RSS is sampled every 2 s, and at the end every service writes the allocation sites that grew
most to logs/bench/memory/NAME-PID.txt. tracemalloc slows the processes: read the sites, not the
timing.

    .venv/bin/python -m tests.bench.probe_memory [--seconds 90] [--speed 120]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tests.bench._kit import ROOT, machine, write
from tests.harness.config import write_config
from tests.harness.pipeline import Pipeline, memory_rss
from tests.harness.sim import SimProcess

DAY = "2026-11-23"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--speed", type=float, default=120)
    ap.add_argument("--no-trace", action="store_true", help="RSS only, no tracemalloc")
    ap.add_argument("--cpython-gc", action="store_true", help="hotpath gc policy off (CPython's own gc)")
    args = ap.parse_args()
    out_dir = ROOT / "logs" / "bench" / "memory"
    if not args.no_trace:
        os.environ["SCALPER_TRACEMALLOC"] = str(out_dir)
    extra = {"hotpath": {"gc_on_idle": False, "gc_freeze": False}} if args.cpython_gc else {}
    tmp = Path(tempfile.mkdtemp(prefix="probe-memory-"))
    rss: dict[str, list[float]] = {}
    with SimProcess(tmp / "sim", speed=args.speed, time_mode="start_at", start_at=f"{DAY}T09:30:00", loop=True,
                    rate_limit_per_min=100000) as sim:
        cfg = write_config(tmp, sim, model={"min_confidence": 0.38},
                           risk={"max_consecutive_losses": 1000, "max_daily_loss": 100000},
                           api={"rate_limit_per_min": 100000},
                           logging={"dir": str(tmp / "logs"), "level": "INFO", "console": False}, **extra)
        with Pipeline(tmp, cfg) as pipe:
            started = time.monotonic()
            while time.monotonic() - started < args.seconds:
                for n in pipe.services:
                    rss.setdefault(n, []).append(memory_rss(pipe.pid(n)) / 2**20)
                time.sleep(2)
            market_end = sim.state()["market"]["now"]
            fills = len(sim.state()["trades"])
    result = {"bench": "probe_memory", "machine": machine(), "speed": args.speed, "wall_s": args.seconds,
              "tracemalloc": not args.no_trace, "gc": "cpython" if args.cpython_gc else "hotpath",
              "market_from": f"{DAY}T09:30 New York", "market_to_utc": market_end, "broker_fills": fills,
              "rss_mb": {n: {"first": round(x[0], 1), "at_quarter": round(x[len(x) // 4], 1), "end": round(x[-1], 1)}
                         for n, x in rss.items()},
              "sites": f"{out_dir}/NAME-PID.txt (tracemalloc: tracing inflates RSS)"}
    write("probe_memory" + ("_cpython_gc" if args.cpython_gc else ""), result)


if __name__ == "__main__":
    main()
