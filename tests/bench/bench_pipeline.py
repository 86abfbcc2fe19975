"""Tick-to-order latency through every process -> logs/bench/pipeline.json

The whole pipeline runs under supervisord against the simulator (real tape, sped up, a low
confidence bar so it trades often). Every entry carries the hop timestamps of the tick that
closed its bar (tick received by the feed ... order acknowledged by the simulator); the order
gateway summarises them and publishes median and p99 per hop in its heartbeat. This script
reads that heartbeat at the end and writes:

- tick_to_order: tick received by the feed -> entry order acknowledged by the simulator
  (the WebSocket hop from the simulator to the feed is measured by bench_feed);
- the bare hops measured in the same run, and the sum of their medians next to the
  end-to-end median.

    .venv/bin/python -m tests.bench.bench_pipeline [--entries 40] [--max-wall 240]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common.bus import Subscriber
from common.config import load_config
from common.hops import SEGMENTS
from common.messages import Heartbeat
from tests.harness.config import write_config
from tests.harness.pipeline import Pipeline
from tests.harness.procs import ROOT
from tests.harness.sim import SimProcess

DAY = "2026-11-23"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=40, help="stop after this many entries")
    ap.add_argument("--max-wall", type=float, default=240, help="give up after this many seconds")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    out = ROOT / "logs" / "bench" / "pipeline.json"
    # At 20x the pipeline trades 20 times as often per wall minute as it would live, which would
    # spend the account's REST budget (200 calls a minute) and measure the rate limiter instead
    # of the pipeline: the budget is lifted on both sides, as in bench_orders.
    with SimProcess(tmp / "sim", speed=20, time_mode="start_at", start_at=f"{DAY}T10:00:00", loop=True,
                    rate_limit_per_min=100000) as sim:
        cfg_path = write_config(tmp, sim, model={"min_confidence": 0.40}, api={"rate_limit_per_min": 100000},
                                risk={"max_consecutive_losses": 1000, "max_daily_loss": 100000},
                                logging={"dir": str(tmp / "logs"), "level": "INFO", "console": False})
        cfg = load_config(cfg_path)
        with Pipeline(tmp, cfg_path):
            sub = Subscriber("bench", cfg.bus.orders_pub, None, topics=[Heartbeat])
            started, stats = time.monotonic(), {}
            while time.monotonic() - started < args.max_wall:
                for env in sub.recv(1000):
                    if isinstance(env.msg, Heartbeat) and env.msg.service == "orders":
                        stats = env.msg.stats
                entries = [o for o in sim.state()["orders"] if ":entry:" in (o.get("customTag") or "")]
                if len(entries) >= args.entries and stats.get("hop_total_us_p50"):
                    break
            sub.close()
    hops = {name: {"median_us": stats.get(f"hop_{name}_us_p50"), "p99_us": stats.get(f"hop_{name}_us_p99")}
            for name in list(SEGMENTS.values()) + ["total"] if f"hop_{name}_us_p50" in stats}
    bare = [h["median_us"] for n, h in hops.items() if n != "total"]
    result = {
        "what": "tick received by the feed -> entry order acknowledged by the simulator, through feed, "
                "inference, engine and order gateway processes (loopback, ipc sockets, 2 cores)",
        "entries": len(entries),
        "tick_to_order": hops.get("total"),
        "hops": {n: h for n, h in hops.items() if n != "total"},
        "sum_of_hop_medians_us": round(sum(bare), 1) if bare else None,
        "spec_limit_order_placement_ms": 500,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if hops.get("total") else 1


if __name__ == "__main__":
    raise SystemExit(main())
