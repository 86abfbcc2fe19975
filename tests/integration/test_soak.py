"""Soak: 8 hours of market time through every process, memory sampled.

The simulator replays the real tape (looped with shifted times) from 09:30 to 17:30
New York at high speed; every service runs under a real supervisord. Each process's
resident memory is sampled every couple of seconds of wall time. The result (growth per
process between the end of warm-up and the end of the session) is written to
logs/bench/soak_memory.json. Marked slow: `make soak` or `pytest --runslow`.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from tests.harness.config import write_config
from tests.harness.pipeline import Pipeline, memory_rss
from tests.harness.procs import ROOT, wait_for
from tests.harness.sim import SimProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

DAY = "2026-11-23"
SPEED = 120                 # 8 h of market time in 4 minutes of wall time
GROWTH_LIMIT_MB = 3         # per process, warm-up end to session end (the goal; it was 64)


def test_eight_hour_session_memory_is_stable(tmp_path):
    out = ROOT / "logs" / "bench" / "soak_memory.json"
    with SimProcess(tmp_path / "sim", speed=SPEED, time_mode="start_at", start_at=f"{DAY}T09:30:00",
                    loop=True, rate_limit_per_min=100000) as sim:
        # keep trading all day (no loss-streak or daily-loss halt) so the soak exercises orders too;
        # at 120x the day's REST calls come 120 times as fast as live, so the per-minute budget is
        # lifted on both sides (the soak measures memory, not the rate limiter)
        cfg = write_config(tmp_path, sim, model={"min_confidence": 0.38},
                           risk={"max_consecutive_losses": 1000, "max_daily_loss": 100000},
                           api={"rate_limit_per_min": 100000},
                           logging={"dir": str(tmp_path / "logs"), "level": "INFO", "console": False})
        samples: dict[str, list[tuple[str, float]]] = {}
        with Pipeline(tmp_path, cfg) as pipe:
            names = pipe.services
            started = time.monotonic()
            while sim.state()["market"]["now"] < f"{DAY}T22:30:00":     # 17:30 New York
                now = sim.state()["market"]["now"]
                for n in names:
                    samples.setdefault(n, []).append((now, memory_rss(pipe.pid(n)) / 2**20))
                assert time.monotonic() - started < 1500, f"market time stuck at {now}\n{pipe.tails()}"
                if len(samples[names[0]]) % 15 == 1:
                    print(f"soak: wall {time.monotonic() - started:.0f} s, market {now}", flush=True)
                time.sleep(2)
            states = pipe.states()
            st = sim.state()
    result = {"market_hours": 8, "speed": SPEED, "wall_s": round(time.monotonic() - started, 1),
              "broker_fills": len(st["trades"]), "processes": {}}
    for n, xs in samples.items():
        mbs = [mb for _, mb in xs]
        k = max(1, len(mbs) // 10)
        warm = statistics.median(mbs[k:2 * k]) if len(mbs) >= 2 * k else mbs[0]
        end = statistics.median(mbs[-k:])
        result["processes"][n] = {"rss_mb_after_warmup": round(warm, 1), "rss_mb_end": round(end, 1),
                                  "growth_mb": round(end - warm, 1), "max_mb": round(max(mbs), 1),
                                  "samples": len(mbs)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    assert all(s == "RUNNING" for s in states.values()), states
    for n, r in result["processes"].items():
        assert r["growth_mb"] < GROWTH_LIMIT_MB, f"{n} grew {r['growth_mb']} MB over the session: {result}"
    assert not st["positions"], f"a position was left open after the 16:25 flatten: {st['positions']}"
