"""record -> train -> evaluate: one function from data files to a new model folder in the registry.

1. Each source (a `.rec` recording, or the shipped CSV through the converter) becomes the
   messages the feed would publish, then rows through the worker's own bar/feature code.
2. Labels: the engine's bracket (common/brackets.py) net of spread and the fees of the
   contract the model will trade (common/instruments.py), or the old sign label.
3. Walk-forward: purged, embargoed folds. In each fold the network is fitted on the older
   part of the training rows, calibrated (temperature) and given a threshold on the newer
   part (validation), then judged on the test block it has never seen.
4. The final network is fitted on all rows the same way; its threshold is the lowest
   confidence at which the rule's expected value after costs is positive over the pooled
   walk-forward predictions (or none, when there is no such level).
5. Everything lands in a new folder models/registry/<version>/ (services/modelctl/registry.py).
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common.brackets import BracketRule
from common.instruments import instrument_for
from services.inference.dataset import NS, build_rows
from services.inference.export import onnx_bytes
from services.inference.features import FEATURE_NAMES, NY, WARMUP
from services.inference.labels import CLASSES, Labels, bracket_labels, sign_labels
from services.inference.train import Hyper, fit_mlp, fit_temperature, logits, probs, robust_range, with_temperature
from services.inference import walkforward as wf
from services.modelctl.data import load_source

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Dataset:
    t0: np.ndarray          # decision time (bar end), ns, sorted
    X: np.ndarray
    lab: Labels             # aligned with t0 (valid rows only)
    sources: list[dict]
    rows_total: int


def _concat(parts: list[tuple[np.ndarray, np.ndarray, Labels]]) -> tuple[np.ndarray, np.ndarray, Labels]:
    t0 = np.concatenate([p[0] for p in parts])
    X = np.concatenate([p[1] for p in parts])
    order = np.argsort(t0, kind="stable")
    cat = {k: np.concatenate([getattr(p[2], k) for p in parts])[order]
           for k in ("y", "valid", "pnl_long", "pnl_short", "exit_long_ns", "exit_short_ns", "t1_ns")}
    return t0[order], X[order], Labels(**cat, kind=parts[0][2].kind)


def build_dataset(paths: list[Path], contract: str, rule: BracketRule, label: str = "bracket",
                  horizon: int = 30, atr_period: int = 14) -> Dataset:
    inst = instrument_for(contract)
    parts, sources, total = [], [], 0
    for p in paths:
        src = load_source(p, contract)
        rows = build_rows(src.messages, src.contract, atr_period)
        lab = bracket_labels(rows, rule, inst) if label == "bracket" else sign_labels(rows, horizon, 0, inst, rule)
        keep = np.flatnonzero(lab.valid)
        sub = Labels(*(getattr(lab, k)[keep] for k in ("y", "valid", "pnl_long", "pnl_short", "exit_long_ns",
                                                         "exit_short_ns", "t1_ns")), kind=lab.kind)
        parts.append((rows.end_ns[keep], rows.X[keep], sub))
        total += len(rows)
        first, last = (int(rows.start_ns[0]), int(rows.start_ns[-1])) if len(rows) else (0, 0)
        sources.append({"file": src.path.name, "sha256": src.sha256, "kind": src.kind, "data_contract": src.contract,
                        "trades": rows.trades, "quotes": rows.quotes, "bars_1s": len(rows), "rows": int(len(keep)),
                        "first_bar": _ny(first), "last_bar": _ny(last),
                        **({"derived": "sizes 1, sides by tick rule, quotes one tick around the trade "
                                       "(services/replay/convert.py)"} if src.kind == "csv" else {})})
    if not parts or not sum(len(p[0]) for p in parts):
        raise SystemExit("model train: no usable row in the data (too short for the feature and ATR warm-up?)")
    t0, X, lab = _concat(parts)
    return Dataset(t0, X, lab, sources, total)


def _ny(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=NY).strftime("%Y-%m-%d %H:%M:%S %Z") if ns else ""


def _fit(ds: Dataset, rows: np.ndarray, hp: Hyper, embargo_ns: int):
    """Fit on the older 80 % of `rows`, calibrate on the newer 20 % (purged). Returns
    (calibrated layers, mean, std, validation rows, calibrated validation probs, T, best epoch)."""
    fit, val = wf.holdout(ds.t0, ds.lab.t1_ns, rows, 0.2, embargo_ns)
    mean, std = ds.X[fit].mean(0), ds.X[fit].std(0)
    std = np.where(std < 1e-12, 1.0, std)
    Z = (ds.X - mean) / std
    layers, epoch = fit_mlp(Z[fit], ds.lab.y[fit], Z[val], ds.lab.y[val], len(CLASSES), hp)
    t = fit_temperature(logits(layers, Z[val]), ds.lab.y[val]) if len(val) else 1.0
    cal = with_temperature(layers, t)
    return cal, mean, std, val, probs(cal, Z[val]), t, epoch


def walk_forward(ds: Dataset, hp: Hyper, n_folds: int, embargo_ns: int, seeds: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per-fold and overall metrics; returns (metrics, pooled test rows, their calibrated probs)."""
    folds = wf.purged_splits(ds.t0, ds.lab.t1_ns, n_folds, embargo_ns, min_train=300)
    out, pooled_idx, pooled_p, trades_all = [], [], [], []
    for k, f in enumerate(folds):
        layers, mean, std, val, pval, t, epoch = _fit(ds, f.train, hp, embargo_ns)
        thr = wf.choose_threshold(wf.ev_by_threshold(ds.t0, pval, ds.lab, val), min_trades=10)
        pt = probs(layers, (ds.X[f.test] - mean) / std)
        prior = np.bincount(ds.lab.y[f.train], minlength=len(CLASSES)) / len(f.train)
        d = np.zeros(len(ds.t0), dtype=np.int64)
        if thr is not None:
            d[f.test] = wf.signals(pt, thr)
        trades = wf.run_rule(ds.t0, d, ds.lab, f.test)
        trades_all += trades
        out.append({"fold": k + 1, "train_rows": int(len(f.train)), "test_rows": int(len(f.test)),
                    "test": [_ny(int(ds.t0[f.test[0]] - NS)), _ny(int(ds.t0[f.test[-1]] - NS))],
                    "temperature": round(t, 4), "best_epoch": epoch, "threshold_from_validation": thr,
                    "classification": wf.classification(pt, ds.lab.y[f.test], prior),
                    "reliability": wf.reliability(pt, ds.lab.y[f.test]),
                    "rule_at_validation_threshold": {"trades": len(trades),
                                                     "net_ticks_total": round(sum(p for *_, p in trades), 2)},
                    # the rule when it calls its most confident tenth (level set on validation), vs random entries
                    "rule_at_top_decile": wf.rule_pnl(ds.t0, pt, ds.lab, f.test,
                                                      round(float(np.quantile(pval.max(1), 0.9)), 4), seeds)})
        pooled_idx.append(f.test)
        pooled_p.append(pt)
    if not out:
        raise SystemExit(f"model train: {len(ds.t0)} rows are too few for {n_folds} walk-forward folds")
    idx, p = np.concatenate(pooled_idx), np.concatenate(pooled_p)
    train_prior = np.bincount(ds.lab.y, minlength=len(CLASSES)) / len(ds.lab.y)
    pnl = np.array([x for *_, x in trades_all])
    overall = {"folds": len(out), "test_rows": int(len(idx)),
               "classification": wf.classification(p, ds.lab.y[idx], train_prior),
               "reliability": wf.reliability(p, ds.lab.y[idx]),
               "rule_at_validation_thresholds": {
                   "trades": int(len(pnl)), "net_ticks_total": round(float(pnl.sum()), 2) if len(pnl) else 0.0,
                   "ev_ticks_per_trade": round(float(pnl.mean()), 3) if len(pnl) else None,
                   "note": "each fold trades its test block at the threshold chosen on its own validation rows"}}
    return {"folds": out, "overall": overall}, idx, p


def git_commit() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "services", "common"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": sha or None, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def train_model(paths: list[Path], contract: str, rule: BracketRule, registry: Path, name: str = "scalper",
                label: str = "bracket", horizon: int = 30, hp: Hyper = Hyper(), n_folds: int = 4,
                embargo_s: int = 60, seeds: int = 200, atr_period: int = 14, log=print) -> Path:
    """Train, evaluate and write a new registry folder; returns its path."""
    from services.modelctl.registry import write_model
    t_start = time.monotonic()
    ds = build_dataset(paths, contract, rule, label, horizon, atr_period)
    log(f"model train: {len(ds.t0)} labelled rows from {len(paths)} source(s) "
        f"({time.monotonic() - t_start:.1f} s); walk-forward, {n_folds} folds")
    embargo_ns = embargo_s * NS
    wf_metrics, idx, p = walk_forward(ds, hp, n_folds, embargo_ns, seeds)
    table = wf.ev_by_threshold(ds.t0, p, ds.lab, idx)
    thr = wf.choose_threshold(table, min_trades=30)
    layers, mean, std, val, pval, t, epoch = _fit(ds, np.arange(len(ds.t0)), hp, embargo_ns)
    lo, hi = robust_range(ds.X)
    outside = float(np.mean(np.any((ds.X < lo) | (ds.X > hi), axis=1)))
    ev = wf_metrics["overall"]["rule_at_validation_thresholds"]["ev_ticks_per_trade"]
    inst = instrument_for(contract)
    cfg = {
        "feature_names": list(FEATURE_NAMES),
        "scaler": {"mean": mean.tolist(), "std": std.tolist(),
                   "constant_in_training": [FEATURE_NAMES[i] for i in np.flatnonzero(ds.X.std(0) < 1e-12)]},
        "classes": CLASSES,
        "label": ds.lab.kind,
        "contract": {"id": contract, "symbol": inst.symbol, "tick_value_cents": inst.tick_value_cents,
                     "round_trip_fee_cents": inst.round_trip_fee_cents},
        "thresholds": {"min_confidence": thr, "chosen_on": "pooled walk-forward test predictions (calibrated)",
                       "ev_by_threshold": table},
        "edge": {"walk_forward_ev_ticks_per_trade": ev, "ev_positive": bool(ev is not None and ev > 0),
                 "trades": wf_metrics["overall"]["rule_at_validation_thresholds"]["trades"]},
        "calibration": {"method": "temperature scaling (multiclass Platt, one parameter), folded into the last layer",
                        "temperature": round(t, 6), "fitted_on": "the newest 20 % of the training rows (purged)"},
        "feature_range": {"min": lo.tolist(), "max": hi.tolist(),
                          "source": "0.5 % / 99.5 % quantiles over all training rows, widened by 25 % of their span",
                          "training_rows_outside": round(outside, 4)},
        "warmup_bars": WARMUP,
        "architecture": {"type": "mlp", "hidden": list(hp.hidden), "activation": "relu"},
        "hyperparameters": {**hp.as_dict(), "folds": n_folds, "embargo_s": embargo_s, "random_seeds": seeds,
                            "best_epoch_final": epoch, "atr_period": atr_period},
        "training": {"sources": ds.sources, "rows": int(len(ds.t0)), "bars_1s": ds.rows_total,
                     "class_share": [round(float((ds.lab.y == i).mean()), 4) for i in range(len(CLASSES))],
                     "trained_on": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                     "seconds": round(time.monotonic() - t_start, 1)},
        "code": git_commit(),
        "metrics": {"walk_forward": wf_metrics},
    }
    Zs = ((ds.X[val] - mean) / std)[:500]
    data, diff = onnx_bytes(layers, len(FEATURE_NAMES), len(CLASSES), name, samples=Zs)
    cfg["export_check"] = {"samples": 2000 + len(Zs), "max_abs_diff_vs_numpy": diff}
    folder = write_model(registry, name, data, cfg)
    log(f"model train: wrote {folder} in {time.monotonic() - t_start:.1f} s; walk-forward EV "
        f"{ev if ev is not None else 'n/a'} ticks/trade, threshold {thr}")
    return folder


def dump(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"
