"""Feature update per bar and model inference per call, on the recorded session and the shipped model.

    .venv/bin/python -m tests.bench.bench_inference

Flat out (BENCH_N calls each, back to back) and at the live cadence (one call per 1 s idle period,
the operations taking turns; tests/bench/_kit.py). Reports median / p99 (microseconds) and the
ratio to the bare floor of the same run; writes logs/bench/inference.json:
- feature_update: FeatureEngine.update(bar) (the live incremental path)
- inference: LoadedModel.predict(raw) = scale into the bound float32 buffer + run_with_iobinding
- bare_session_run: session.run on a ready float32 input (the floor), and the overhead ratio
- worker_bar: InferenceWorker.predict(bar) end to end (features, inference, range check, Prediction)
- worker_bar_with_hotpath_warmup: the same after the hot-path warm-up calls and busy-poll a service
  runs before each bar boundary (common/hotpath.py)
"""
from __future__ import annotations

import gc
import os
import time

import numpy as np

from common.config import HotPathConfig, ModelConfig
from common.hotpath import codec_round_trip

from services.inference.features import FEATURE_NAMES, FeatureEngine
from services.inference.model import load_model
from services.inference.recorded import load_trades, recorded_bars
from services.inference.worker import InferenceWorker
from tests.bench._kit import ROOT, back_to_back, cadence, machine, ratio, stats, take_turns, write

N = int(os.environ.get("BENCH_N", "3000"))


class Ops:
    """The three measured operations over the recorded session's bars, each returning its ns."""

    def __init__(self):
        self.model = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
        self.bars = recorded_bars(load_trades())
        fe = FeatureEngine()
        self.raws = [fe.update(b).copy() for b in self.bars]
        m = self.model
        self.xs = [((r - m.mean) * m.inv_std).astype(np.float32)[None, :] for r in self.raws]
        self.worker = InferenceWorker(m, "C")
        self.i = self.j = self.k = 0
        self.feature_us: dict[str, list[float]] = {"worker_bar": [], "worker_bar_warmed": []}
        # what the inference service registers with its hot path (services/inference/__main__.py)
        self.warmers = [codec_round_trip, lambda: self.worker.warm_up()]

    def worker_bar(self, kind: str = "worker_bar") -> int:
        """InferenceWorker.predict(bar): features, inference, range check, Prediction."""
        b = self.bars[self.i % len(self.bars)]
        self.i += 1
        if self.i % len(self.bars) == 0:
            self.worker = InferenceWorker(self.model, "C")
        t0 = time.perf_counter_ns()
        self.worker.predict(b)
        dt = time.perf_counter_ns() - t0
        self.feature_us[kind].append(self.worker.stats.last_feature_us)
        return dt

    def worker_bar_warmed(self) -> int:
        """worker_bar as a service runs it with the hot-path warm-up on (common/hotpath.py): for
        warm_before_ms, the warm-up calls (the model on the last features, a codec round trip)
        every warm_every_ms with a busy-poll between, then the bar (its worst case: the bar lands
        up to warm_every_ms after the last warm-up)."""
        cfg = HotPathConfig()
        end = time.perf_counter_ns() + int(cfg.warm_before_ms * 1e6)
        while (now := time.perf_counter_ns()) < end:
            for fn in self.warmers:
                fn()
            until = min(end, now + int(cfg.warm_every_ms * 1e6))
            while time.perf_counter_ns() < until:
                pass
        return self.worker_bar("worker_bar_warmed")

    def model_predict(self) -> int:
        """LoadedModel.predict(raw): scaling into the bound buffer + run_with_iobinding."""
        raw = self.raws[self.j % len(self.raws)]
        self.j += 1
        t0 = time.perf_counter_ns()
        self.model.predict(raw)
        return time.perf_counter_ns() - t0

    def bare_session_run(self) -> int:
        """The floor: session.run on a ready float32 input."""
        x = self.xs[self.k % len(self.xs)]
        self.k += 1
        t0 = time.perf_counter_ns()
        self.model.session.run(["probs"], {"features": x})
        return time.perf_counter_ns() - t0


def summarise(samples: dict[str, list[int]], feature_us: dict[str, list[float]], live: bool) -> dict:
    s = {k: stats(v) for k, v in samples.items()}
    return {"cadence": cadence(live), "unit": "us",
            "worker_bar_end_to_end": s["worker_bar"], "feature_update": stats(feature_us["worker_bar"], unit_ns=1.0),
            "inference": s["model_predict"], "bare_session_run": s["bare_session_run"],
            "inference_ratio_to_bare": ratio(s["model_predict"], s["bare_session_run"]),
            "worker_bar_ratio_to_bare": ratio(s["worker_bar"], s["bare_session_run"]),
            "worker_bar_with_hotpath_warmup": s["worker_bar_warmed"],
            "feature_update_with_hotpath_warmup": stats(feature_us["worker_bar_warmed"], unit_ns=1.0),
            "worker_bar_with_hotpath_warmup_ratio_to_bare": ratio(s["worker_bar_warmed"], s["bare_session_run"])}


def session_options() -> dict:
    """One cold LoadedModel.predict per idle period for each set of ONNX session options the
    issue asked about, taking turns with the bare session.run floor (the shipped options)."""
    import onnxruntime as ort
    import services.inference.model as model_module
    level = ort.GraphOptimizationLevel
    variants = {"shipped (ORT_ENABLE_ALL, 1 thread, sequential)": {},
                "enable_cpu_mem_arena=False": {"enable_cpu_mem_arena": False},
                "enable_mem_pattern=False": {"enable_mem_pattern": False},
                "ORT_ENABLE_BASIC": {"graph_optimization_level": level.ORT_ENABLE_BASIC},
                "ORT_DISABLE_ALL": {"graph_optimization_level": level.ORT_DISABLE_ALL},
                "allow_spinning=0": {"entries": {"session.intra_op.allow_spinning": "0",
                                                 "session.inter_op.allow_spinning": "0"}}}
    shipped = model_module._session
    raw = np.linspace(-1.0, 1.0, len(FEATURE_NAMES))
    ops: dict = {}
    for name, opts in variants.items():
        def make(path, opts=opts):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = opts.get("graph_optimization_level", level.ORT_ENABLE_ALL)
            so.log_severity_level = 3
            for key in ("enable_cpu_mem_arena", "enable_mem_pattern"):
                if key in opts:
                    setattr(so, key, opts[key])
            for key, value in opts.get("entries", {}).items():
                so.add_session_config_entry(key, value)
            return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        model_module._session = make
        try:
            m = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
        finally:
            model_module._session = shipped

        def run(m=m) -> int:
            t0 = time.perf_counter_ns()
            m.predict(raw)
            return time.perf_counter_ns() - t0
        ops[name] = run
    floor = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
    x = ((raw - floor.mean) * floor.inv_std).astype(np.float32)[None, :]

    def bare() -> int:
        t0 = time.perf_counter_ns()
        floor.session.run(["probs"], {"features": x})
        return time.perf_counter_ns() - t0
    ops["bare_session_run"] = bare
    got = {k: stats(v) for k, v in take_turns(ops).items()}
    return {"cadence": cadence(True), "unit": "us", "what": "LoadedModel.predict, cold (one call per idle period)",
            **{k: {**v, "ratio_to_bare": ratio(v, got["bare_session_run"])} for k, v in got.items()}}


def gc_pauses(ops: Ops) -> dict:
    """The collections the hot path makes in the inference process (common/hotpath.py), timed:
    the heap frozen as the service freezes it at start, then a minute of bars (60 predictions
    and their messages encoded) before each collection."""
    from common.messages import encode
    gc.collect()
    gc.freeze()
    out: dict = {}
    try:
        for generation in (0, 1, 2):
            times = []
            for _ in range(5):
                for _ in range(60):
                    encode(ops.worker.predict(ops.bars[ops.i % len(ops.bars)]), seq=1, ts_ns=1, src="bench")
                    ops.i += 1
                t0 = time.perf_counter_ns()
                gc.collect(generation)
                times.append(time.perf_counter_ns() - t0)
            out[f"generation_{generation}"] = stats(times, unit_ns=1e6)
    finally:
        gc.unfreeze()
    return {"unit": "ms", "goal_max_ms": 2.0, **out}


def main() -> dict:
    ops = Ops()
    fns = {"worker_bar": ops.worker_bar, "worker_bar_warmed": ops.worker_bar_warmed, "model_predict": ops.model_predict, "bare_session_run": ops.bare_session_run}
    hot = HotPathConfig()
    result = {"bench": "inference", "machine": machine(), "model_version": ops.model.version,
              "features": len(FEATURE_NAMES),
              "hotpath_warmup": {"warm_before_ms": hot.warm_before_ms, "warm_max_ms": hot.warm_max_ms,
                                 "warm_every_ms": hot.warm_every_ms, "bar_s": hot.bar_s,
                                 "busy_poll_cpu_share_of_one_core_at_most": round(
                                     (hot.warm_before_ms + hot.warm_max_ms) / (hot.bar_s * 1000), 4),
                                 "note": "the bar lands inside the window here; in the pipeline the window waits "
                                         "for the market's closing tick at most warm_max_ms (bench_pipeline "
                                         "reports how many bars landed in it)",
                                 "warmers": "codec round trip + InferenceWorker.warm_up (the per-bar path on scratch "
                                            "features: features, model, range check, Prediction, encode)",
                                 "bar_lands": "at the boundary, up to warm_every_ms after the last warm-up"}}
    gc.disable()
    try:
        flat = back_to_back(fns, N)
        result["flat"] = summarise(flat, {k: v[-N:] for k, v in ops.feature_us.items()}, live=False)
        for v in ops.feature_us.values():
            v.clear()
        result["live"] = summarise(take_turns(fns), ops.feature_us, live=True)
        t0 = time.perf_counter_ns()
        for _ in range(200):
            for fn in ops.warmers:
                fn()
        result["hotpath_warmup"]["warmers_us_per_round_flat"] = round((time.perf_counter_ns() - t0) / 200 / 1000, 2)
        result["gc_pause_after_freeze"] = gc_pauses(ops)
        if os.environ.get("BENCH_ORT_OPTIONS", "1") != "0":
            result["session_options_live"] = session_options()
    finally:
        gc.enable()
    result["goal_us"] = {"worker_bar_median_live": 100}
    result["spec_limits_us"] = {"feature_update": 5000, "inference": 10000}
    result["note"] = ("1 thread, ORT_SEQUENTIAL, ORT_ENABLE_ALL; live = one call per idle period, the four "
                      "operations taking turns; feature_update is the worker's own feature time within worker_bar")
    write("inference", result)
    return result


if __name__ == "__main__":
    main()
