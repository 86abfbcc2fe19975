"""`scalper model evaluate`: a registry model judged on data it has not seen.

Same rows and labels as training (services/modelctl/pipeline.py), scored by the ONNX file
through onnxruntime exactly as the worker scores it; metrics from walkforward.py: log loss
and accuracy next to the training class prior, the reliability table, the rule's P&L at the
model's threshold next to random entries, and the share of rows the range gate would block.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.brackets import BracketRule
from services.inference import walkforward as wf
from services.inference.features import FEATURE_NAMES
from services.inference.model import load_model
from services.modelctl.pipeline import build_dataset


def score(model, X: np.ndarray) -> np.ndarray:
    z = ((X - model.mean) * model.inv_std).astype(np.float32)
    return model.session.run([model.output_name], {model.input_name: z})[0].astype(np.float64)


def evaluate(folder: Path, data: list[Path], rule: BracketRule, atr_period: int = 14, seeds: int = 200) -> dict:
    model = load_model(Path(folder) / "model.onnx", Path(folder) / "config.json", list(FEATURE_NAMES))
    cfg = model.config
    contract = cfg["contract"]["id"]
    label = cfg["label"].get("type", "bracket")
    ds = build_dataset(data, contract, rule, label, int(cfg["label"].get("horizon_bars", 30)), atr_period)
    p = score(model, ds.X)
    prior = np.array(cfg["training"]["class_share"], dtype=np.float64)
    idx = np.arange(len(ds.t0))
    thr = cfg["thresholds"].get("min_confidence")
    out_rng = np.any((ds.X < model.range_lo) | (ds.X > model.range_hi), axis=1)
    return {"version": model.version, "sources": ds.sources,
            "classification": wf.classification(p, ds.lab.y, prior),
            "reliability": wf.reliability(p, ds.lab.y),
            "rule": wf.rule_pnl(ds.t0, p, ds.lab, idx, thr if thr is not None else 0.5, seeds),
            "threshold_used": thr if thr is not None else "0.5 (the model has no validated threshold)",
            "ev_by_threshold": wf.ev_by_threshold(ds.t0, p, ds.lab, idx),
            "rows_out_of_range": round(float(out_rng.mean()), 4)}
