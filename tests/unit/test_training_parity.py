"""Training from a recording sees exactly what the live worker computes on the same recording."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.config import ModelConfig
from common.messages import Prediction
from services.feed.core import FeedCore
from services.inference.dataset import build_rows
from services.inference.features import FEATURE_NAMES
from services.inference.model import load_model
from services.inference.worker import InferenceWorker
from services.modelctl.data import load_source
from services.replay.recording import read_recording
from tests.unit._recording_kit import CONTRACT, write_recording

ROOT = Path(__file__).resolve().parents[2]


def test_training_rows_equal_the_live_workers_features_on_the_same_recording(tmp_path, monkeypatch):
    from services.modelctl import data
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    rec = write_recording(tmp_path / "MESM8_2018-05-07.rec", minutes=8)
    fresh = load_source(rec, "CON.F.US.MES.H26").messages
    cached = load_source(rec, "CON.F.US.MES.H26").messages               # from the message cache this time
    assert list((tmp_path / "cache").glob("*.npz")) and cached == fresh
    rows = build_rows(cached, CONTRACT)

    # live: every record through the feed's FeedCore into the worker, as replay -> feed -> inference do
    model = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
    worker = InferenceWorker(model, CONTRACT)
    seen: list[np.ndarray] = []
    score = model.predict
    model.predict = lambda raw: (seen.append(raw.copy()), score(raw))[1]
    preds: list[Prediction] = []

    def publish(msg, **_):
        out = worker.on_trade(msg.contract, msg.price_ticks, msg.size, msg.aggressor, msg.exch_ns) \
            if hasattr(msg, "price_ticks") else worker.on_quote(msg.contract, msg.bid_ticks, msg.ask_ticks, msg.exch_ns)
        preds.extend(o for o in out if isinstance(o, Prediction))
    core = FeedCore(CONTRACT, publish)
    n_trades = 0
    for r in read_recording(rec):
        core.on_event(r.target, r.args, r.recv_ns)
        n_trades += r.target == "GatewayTrade"
    preds.extend(o for o in worker.on_time(core.last_exch_ns + 1_000_000_000) if isinstance(o, Prediction))

    assert len(preds) == len(rows) > 400
    np.testing.assert_array_equal(np.array(seen), rows.X)                       # bit for bit
    assert [p.bar_start_ns for p in preds] == rows.start_ns.tolist()
    assert [p.atr_ticks for p in preds] == rows.atr.tolist()
    assert [p.spread_ticks for p in preds] == (rows.ask - rows.bid).tolist()
    # real sizes, sides and spreads reached the features (not a derived 1-lot, 1-tick tape)
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    assert rows.X[:, col["spread"]].max() >= 2
    assert rows.trades == n_trades and rows.quotes > n_trades
