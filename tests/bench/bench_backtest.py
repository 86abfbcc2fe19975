"""`scalper backtest` on the shipped session (3.5 hours of ES trades, converted as MES).

    .venv/bin/python -m tests.bench.bench_backtest [--runs 3]

Each run is a whole backtest (read + convert + feed normalizer/sanitizer, bars, features,
ONNX, the engine's rules, the session files and report). The first run is cold (an empty
message cache: CSV -> recording -> FeedCore); the others read the normalized messages from
the cache (services/modelctl/data.py). Reports the cold seconds and, over the warm runs,
the median and p99 of the total seconds, of the decision loop alone (worker + engine) and
its bars per second, to logs/bench/backtest.json. At the quick start's demo threshold.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from common.config import load_config
from services.modelctl.backtest import run_backtest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "real" / "ESM8_2018-05-07_trades.csv.gz"


def pct(xs: list[float]) -> dict:
    a = np.array(xs, dtype=np.float64)
    return {"median": round(float(np.median(a)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "min": round(float(a.min()), 3)}


def main(runs: int = 4) -> dict:
    from services.modelctl import data
    cfg = load_config(None)
    totals, loops, load, rates, last, cold = [], [], [], [], {}, {}
    with tempfile.TemporaryDirectory() as cache:
        data.CACHE_DIR = Path(cache)
        for i in range(max(2, runs)):
            with tempfile.TemporaryDirectory() as tmp:
                last = run_backtest(cfg, DATA, out_dir=Path(tmp))
            if i == 0:
                cold = last["seconds"]
                continue
            totals.append(last["seconds"]["total"])
            loops.append(last["seconds"]["run"])
            load.append(last["seconds"]["load"])
            rates.append(last["bars_per_s"])
    result = {"data": DATA.name, "warm_runs": len(totals), "bars": last["bars"], "trades": last["trades"],
              "min_confidence": cfg.model.min_confidence, "cold_first_run_s": cold,
              "total_s": pct(totals), "load_and_normalize_s": pct(load), "decision_loop_s": pct(loops),
              "decision_loop_bars_per_s": pct(rates)}
    out = ROOT / "logs" / "bench" / "backtest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    main(ap.parse_args().runs)
