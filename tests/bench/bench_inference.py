"""Feature update per bar and model inference per call, on the recorded session and the shipped model.

    .venv/bin/python -m tests.bench.bench_inference

Reports median / p99 (microseconds) over >= 10,000 calls each and writes logs/bench/inference.json:
- feature_update: FeatureEngine.update(bar) (the live incremental path)
- inference: LoadedModel.predict(raw) = scale into the bound float32 buffer + run_with_iobinding
- bare_session_run: session.run on a ready float32 input (the floor), and the overhead ratio
- worker_bar: InferenceWorker.predict(bar) end to end (features, inference, range check, Prediction)
"""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import numpy as np

from common.config import ModelConfig

from services.inference.features import FEATURE_NAMES, FeatureEngine
from services.inference.model import load_model
from services.inference.recorded import load_trades, recorded_bars
from services.inference.worker import InferenceWorker

ROOT = Path(__file__).resolve().parents[2]
N = 20_000


def stats(ns: list[int]) -> dict:
    a = np.array(ns, dtype=np.float64) / 1000.0
    return {"calls": len(a), "median_us": round(float(np.median(a)), 3), "p99_us": round(float(np.percentile(a, 99)), 3),
            "max_us": round(float(a.max()), 1)}


def main() -> dict:
    model = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
    bars = recorded_bars(load_trades())
    clock = time.perf_counter_ns
    gc.disable()
    try:
        fe = FeatureEngine()
        feat_ns, raws = [], []
        for i in range(N):
            b = bars[i % len(bars)]
            if i and i % len(bars) == 0:
                fe.reset()
            t0 = clock()
            v = fe.update(b)
            feat_ns.append(clock() - t0)
            if i < len(bars):
                raws.append(v.copy())

        inf_ns = []
        for i in range(N):
            raw = raws[i % len(raws)]
            t0 = clock()
            model.predict(raw)
            inf_ns.append(clock() - t0)

        sess = model.session
        xs = [((r - model.mean) * model.inv_std).astype(np.float32)[None, :] for r in raws]
        bare_ns = []
        for i in range(N):
            x = xs[i % len(xs)]
            t0 = clock()
            sess.run(["probs"], {"features": x})
            bare_ns.append(clock() - t0)

        w = InferenceWorker(model, "C")
        bar_ns = []
        for i in range(N):
            b = bars[i % len(bars)]
            t0 = clock()
            w.predict(b)
            bar_ns.append(clock() - t0)
    finally:
        gc.enable()

    inf, bare = stats(inf_ns), stats(bare_ns)
    result = {
        "model_version": model.version,
        "features": len(FEATURE_NAMES),
        "feature_update": stats(feat_ns),
        "inference": inf,
        "bare_session_run": bare,
        "inference_overhead_ratio_median": round(inf["median_us"] / bare["median_us"], 3),
        "inference_overhead_ratio_p99": round(inf["p99_us"] / bare["p99_us"], 3),
        "worker_bar_end_to_end": stats(bar_ns),
        "targets_us": {"feature_update_p99": 100, "inference_p99": 200},
        "spec_limits_us": {"feature_update": 5000, "inference": 10000},
        "note": "1 thread, ORT_SEQUENTIAL, ORT_ENABLE_ALL; inference = scaling + run_with_iobinding on bound buffers",
    }
    out = ROOT / "logs" / "bench" / "inference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
