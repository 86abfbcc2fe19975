"""The hot path's warm-up of the inference worker (InferenceWorker.warm_up) changes nothing
the worker publishes: it scores the last bar again on scratch feature windows."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from common.config import ModelConfig
from services.inference.features import FEATURE_NAMES
from services.inference.model import load_model
from services.inference.recorded import load_trades, recorded_bars
from services.inference.worker import InferenceWorker

ROOT = Path(__file__).resolve().parents[2]


def test_warm_up_between_bars_leaves_every_prediction_unchanged():
    model = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
    bars = recorded_bars(load_trades())[:700]
    plain, warmed = InferenceWorker(model, "C"), InferenceWorker(model, "C")
    warmed.warm_up()                                  # before any bar: nothing to score, no error
    for bar in bars:
        want = plain.predict(bar)
        for _ in range(3):
            warmed.warm_up()
        got = warmed.predict(bar)
        assert replace(got, feature_us=0.0, inference_us=0.0) == replace(want, feature_us=0.0, inference_us=0.0)
    assert warmed.stats.predictions == plain.stats.predictions == len(bars)
    assert (warmed.bf.features.values == plain.bf.features.values).all()
