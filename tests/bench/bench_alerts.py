"""Alert latency benchmark -> logs/bench/alerts.json

A real alerts process (`python -m services.alerts`), a real engine-side Publisher on an ipc
socket (serving its snapshot socket, as the engine does) and a real HTTP webhook receiver on loopback. N RiskEvents, one at a time; for each:
  - publish -> webhook request received (the number a trader's phone sees, before the push)
  - publish -> alert raised inside the alerts process (the payload's ts_ns: bus + rules)
  - alert raised -> webhook received (router, courier thread, HTTP POST)
Each event has its own kind (no deduplication) and the rate limit is raised for the run.
Wall-clock ns on one machine for all three stamps.

    .venv/bin/python -m tests.bench.bench_alerts [N]
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common.config import load_config
from common.messages import RiskEvent
from tests.harness.config import write_config
from tests.harness.procs import ROOT, ServiceProcess, wait_for
from tests.harness.publishers import Publishers
from tests.harness.receivers import HttpReceiver
from tests.harness.sim import free_port


def pct(xs: list[float]) -> dict:
    s = sorted(xs)
    if not s:
        return {"n": 0}
    return {"median": round(statistics.median(s), 3), "p99": round(s[max(0, int(0.99 * len(s)) - 1)], 3),
            "max": round(s[-1], 3), "n": len(s)}


def main(n: int = 200) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    with HttpReceiver() as hook:
        cfg_path = write_config(tmp, None, logging={"dir": str(tmp / "logs"), "level": "INFO", "console": False},
                                alerts={"metrics_port": free_port(), "services": [], "dedup_window_s": 0,
                                        "webhook": {"url": f"{hook.url}/hook", "min_severity": "INFO",
                                                    "rate_limit": {"burst": 100000, "per_minute": 10**6}}})
        cfg = load_config(cfg_path)
        with ServiceProcess("alerts", cfg_path) as proc, Publishers(cfg, ("engine",)) as bus:
            # the subscriber is connected once a warm-up event arrives at the receiver
            warm = [0]

            def warmed() -> bool:
                warm[0] += 1
                bus.publish("engine", RiskEvent(f"warmup_{warm[0]}", True, "ERROR", "warm-up"))
                time.sleep(0.2)
                return _warm(hook)
            wait_for(warmed, 30, interval=0.1, what=f"the alerts process delivering\n{proc.tail()}")
            time.sleep(0.5)
            total, bus_rules, delivery = [], [], []
            for i in range(n):
                kind = f"bench_{i}"
                t0 = bus.publish("engine", RiskEvent(kind, True, "ERROR", f"sample {i}"))
                got = hook.wait(lambda r: r.body.get("kind") == kind, 10, what=f"sample {i}")[0]
                total.append((got.at_ns - t0) / 1e6)
                bus_rules.append((got.body["ts_ns"] - t0) / 1e6)
                delivery.append((got.at_ns - got.body["ts_ns"]) / 1e6)
                time.sleep(0.01)
    out = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "samples": n,
        "risk_event_to_webhook_ms": pct(total),
        "risk_event_to_alert_raised_ms": pct(bus_rules),
        "alert_raised_to_webhook_ms": pct(delivery),
        "note": "one RiskEvent at a time; real alerts process, ipc bus, HTTP webhook on loopback",
    }
    path = ROOT / "logs" / "bench" / "alerts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


def _warm(hook: HttpReceiver) -> bool:
    return any(str(b.get("kind", "")).startswith("warmup") for b in hook.bodies() if isinstance(b, dict))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
