"""Shadow mode afterwards: agreement and would-be P&L of both models from the worker's log."""
from __future__ import annotations

import pytest

import json
from pathlib import Path

from common.config import ModelConfig, load_config
from common.messages import ShadowPrediction, decode, encode
from common.ticks.feed_core import FeedCore
from services.inference.shadow_log import ShadowLog
from services.inference.features import FEATURE_NAMES
from services.inference.model import load_model
from services.inference.worker import InferenceWorker
from services.modelctl.shadow import agreement, summarize
from services.positions.report import build_report
from common.recording import read_recording
from tests.unit._recording_kit import CONTRACT, write_recording

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _message_cache_in_tmp(tmp_path, monkeypatch):
    from services.modelctl import data
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")


def test_agreement_counts_calls_not_silence():
    a = agreement([0, 1, 1, -1, 0, 0], [0, 1, -1, -1, 1, 0])
    assert a == {"bars": 6, "same_call_share": 0.6667, "bars_with_a_call": 4, "agree_when_either_calls": 0.5,
                 "opposite_calls": 1, "primary_calls": 3, "shadow_calls": 4}


def test_shadow_prediction_round_trips_on_the_wire():
    m = ShadowPrediction(CONTRACT, 5, 1, 0.6, [0.2, 0.2, 0.6], "s", "p", -1, 0.5, 100, 99, 100, 4.0, True, False)
    assert decode(encode(m)).msg == m


def test_summary_from_the_workers_log_and_the_days_recording(tmp_path):
    logs = tmp_path / "logs"
    rec = write_recording(logs / "ticks" / f"MESM8_2018-05-07.rec", minutes=20, seed=5)
    model = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
    shadow = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
    worker = InferenceWorker(model, CONTRACT, shadow=shadow)
    log = ShadowLog(logs)

    def publish(msg, **_):
        out = worker.on_trade(msg.contract, msg.price_ticks, msg.size, msg.aggressor, msg.exch_ns) \
            if hasattr(msg, "price_ticks") else worker.on_quote(msg.contract, msg.bid_ticks, msg.ask_ticks, msg.exch_ns)
        for o in out:
            if isinstance(o, ShadowPrediction):
                log.write(o)
    core = FeedCore(CONTRACT, publish)
    for r in read_recording(rec):
        core.on_event(r.target, r.args, r.recv_ns)
    log.close()
    cfg = load_config(None)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"range_policy": "flag", "min_confidence": 0.3}),
                                 "trading": cfg.trading.model_copy(update={"contract": CONTRACT})})
    out = summarize(cfg, logs, "2018-05-07")
    s = json.loads(out.read_text())
    assert s["agreement"]["same_call_share"] == 1.0 and s["agreement"]["bars"] >= 1190    # a model agrees with itself
    w = s["would_be"]
    assert w["primary"]["trades"] == w["shadow"]["trades"] > 0
    assert w["primary"]["net_pnl_cents"] == w["shadow"]["net_pnl_cents"]
    assert "Shadow model" in build_report(logs, "2018-05-07").read_text()
