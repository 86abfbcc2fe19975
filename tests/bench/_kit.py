"""What every benchmark shares: the machine it ran on, the two cadences, percentiles, the ratio
to the bare floor, and writing the JSON under logs/bench/.

Live, a bar closes once a second and everything between bars goes cold (caches, branch
predictors, the CPU's idle states, the scheduler). A benchmark that runs flat out only ever
measures warm code, so each one runs its operations at two cadences:

- "flat": back to back, as fast as they go;
- "live": one operation, then `BENCH_IDLE_S` (default 1.0 s) of sleep, like one bar a second.

At the live cadence the measured operation and its bare floor take turns, one per idle
period, so both see the same cold start. `BENCH_BARS` (default 10) is the number of idle
periods per operation: p99 over so few samples is close to the maximum, and the JSON says so.
Raise it on a quiet machine (`BENCH_BARS=60 make bench`).
"""
from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
IDLE_S = float(os.environ.get("BENCH_IDLE_S", "1.0"))
BARS = int(os.environ.get("BENCH_BARS", "10"))


def machine() -> dict:
    """nproc, CPU model, Python, and the load average when the benchmark started."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "load_avg_1_5_15_at_start": [round(x, 2) for x in load],
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def cadence(live: bool) -> dict:
    return ({"name": "live", "idle_s_between": IDLE_S, "samples_per_op": BARS,
             "note": "one operation per idle period (one bar a second); p99 of few samples ~ the max"}
            if live else {"name": "flat", "idle_s_between": 0.0, "note": "back to back"})


def stats(samples_ns: list[int] | list[float], unit_ns: float = 1000.0) -> dict:
    """median / p99 / max in microseconds (unit_ns=1000) or milliseconds (unit_ns=1e6)."""
    if not samples_ns:
        return {"n": 0}
    a = np.asarray(samples_ns, dtype=np.float64) / unit_ns
    return {"n": int(a.size), "median": round(float(np.median(a)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


def ratio(ours: dict, floor: dict) -> dict:
    """ours / floor, median and p99, and the absolute median added."""
    if not ours.get("n") or not floor.get("n") or not floor["median"] or not floor["p99"]:
        return {}
    return {"median": round(ours["median"] / floor["median"], 3), "p99": round(ours["p99"] / floor["p99"], 3),
            "added_median": round(ours["median"] - floor["median"], 3)}


def take_turns(ops: dict[str, Callable[[], int]], bars: int = BARS, idle_s: float = IDLE_S) -> dict[str, list[int]]:
    """Live cadence: each op (returning its own duration in ns) runs once per idle period, the ops
    taking turns (rotating the order each round) so measured code and floor see the same cold
    start. Returns the samples per op."""
    names = list(ops)
    out: dict[str, list[int]] = {n: [] for n in names}
    for r in range(bars):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            time.sleep(idle_s)
            out[name].append(ops[name]())
    return out


def back_to_back(ops: dict[str, Callable[[], int]], n: int, warmup: int = 200) -> dict[str, list[int]]:
    """Flat out: each op n times in a row after a warm-up, one op after the other."""
    out: dict[str, list[int]] = {}
    for name, fn in ops.items():
        for _ in range(warmup):
            fn()
        out[name] = [fn() for _ in range(n)]
    return out


def write(name: str, result: dict) -> Path:
    path = ROOT / "logs" / "bench" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
