"""Walk-forward evaluation: purged, embargoed time splits and the metrics a model is judged by.

Splits. Rows are in time order; the last `n_folds` of `n_folds + 1` equal blocks are test
blocks in turn. A fold trains only on rows before its test block, and drops (purges) every
row whose label window [t0, t1] ends within `embargo` of the test block's first bar: no
label that looks into the test block, nor its immediate neighbourhood, is ever trained on.

Metrics, per fold and overall: log loss and accuracy next to the class prior of the
training rows; a reliability table (confidence bins: mean confidence, hit rate, rows); and
the P&L of the engine's rule (enter when flat and confident, the ATR bracket decides the
exit, one position at a time) net of spread and fees, next to random entries at the same
rate with the same brackets over many seeds: the baseline a model must beat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.inference.labels import CLASSES, Labels

EPS = 1e-12


@dataclass
class Fold:
    train: np.ndarray      # row indices
    test: np.ndarray


def purged_splits(t0_ns: np.ndarray, t1_ns: np.ndarray, n_folds: int = 4, embargo_ns: int = 0,
                  min_train: int = 500) -> list[Fold]:
    """Walk-forward folds over rows sorted by t0 (see the module docstring)."""
    n = len(t0_ns)
    if n and np.any(np.diff(t0_ns) < 0):
        raise ValueError("rows must be in time order")
    edges = np.linspace(0, n, n_folds + 2).astype(int)
    folds = []
    for k in range(1, n_folds + 1):
        test = np.arange(edges[k], edges[k + 1])
        if not len(test):
            continue
        cut = t0_ns[test[0]] - embargo_ns
        before = np.arange(0, edges[k])
        train = before[t1_ns[before] < cut]
        if len(train) >= min_train:
            folds.append(Fold(train, test))
    return folds


def holdout(t0_ns: np.ndarray, t1_ns: np.ndarray, rows: np.ndarray, frac: float = 0.2,
            embargo_ns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) from `rows` (time ordered): the last `frac` validates, purged like a fold."""
    k = int(len(rows) * (1 - frac))
    val = rows[k:]
    fit = rows[:k]
    if len(val):
        fit = fit[t1_ns[fit] < t0_ns[val[0]] - embargo_ns]
    return fit, val


# ---------------------------------------------------------------- metrics

def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(probs[np.arange(len(y)), y] + EPS))) if len(y) else float("nan")


def reliability(probs: np.ndarray, y: np.ndarray, bins=(0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0001)) -> list[dict]:
    """Per confidence bin: rows, mean confidence, share where the predicted class was right."""
    conf = probs.max(1)
    right = probs.argmax(1) == y
    out = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (conf >= lo) & (conf < hi)
        if m.any():
            out.append({"bin": [round(lo, 2), round(min(hi, 1.0), 2)], "rows": int(m.sum()),
                        "mean_confidence": round(float(conf[m].mean()), 4),
                        "hit_rate": round(float(right[m].mean()), 4)})
    return out


def signals(probs: np.ndarray, min_conf: float) -> np.ndarray:
    """The engine's entry rule on a prediction: direction (+1/-1) when confident, else 0."""
    d = np.array(CLASSES)[probs.argmax(1)]
    return np.where(probs.max(1) >= min_conf, d, 0)


def run_rule(t0_ns: np.ndarray, direction: np.ndarray, lab: Labels, idx: np.ndarray) -> list[tuple[int, int, float]]:
    """Trades the rule takes over rows `idx` (time ordered), one at a time: (row, dir, net ticks)."""
    out = []
    free_at = -1
    for i in idx:
        d = int(direction[i])
        if d == 0 or t0_ns[i] < free_at or not lab.valid[i]:
            continue
        pnl = float(lab.pnl_long[i] if d > 0 else lab.pnl_short[i])
        out.append((int(i), d, pnl))
        free_at = int(lab.exit_long_ns[i] if d > 0 else lab.exit_short_ns[i])
    return out


def random_entries(t0_ns: np.ndarray, lab: Labels, idx: np.ndarray, rate: float, seeds: int = 200) -> np.ndarray:
    """Total net ticks of random entries (prob `rate` per flat row, random side) per seed."""
    totals = np.zeros(seeds)
    if rate <= 0:
        return totals
    idx = idx[lab.valid[idx]]
    for s in range(seeds):
        rng = np.random.default_rng(1000 + s)
        take = rng.random(len(idx)) < rate
        side = np.where(rng.random(len(idx)) < 0.5, 1, -1)
        d = np.zeros(len(t0_ns), dtype=np.int64)
        d[idx[take]] = side[take]
        totals[s] = sum(p for _, _, p in run_rule(t0_ns, d, lab, idx))
    return totals


def rule_pnl(t0_ns: np.ndarray, probs_rows: np.ndarray, lab: Labels, idx: np.ndarray, min_conf: float,
             seeds: int = 200) -> dict:
    """The engine's rule at `min_conf` over rows `idx` (probs_rows aligned with idx) vs random entries."""
    d = np.zeros(len(t0_ns), dtype=np.int64)
    d[idx] = signals(probs_rows, min_conf)
    trades = run_rule(t0_ns, d, lab, idx)
    pnl = np.array([p for _, _, p in trades])
    eligible = int(lab.valid[idx].sum())
    rate = len(trades) / eligible if eligible else 0.0
    rnd = random_entries(t0_ns, lab, idx, rate, seeds)
    total = float(pnl.sum()) if len(pnl) else 0.0
    return {"min_confidence": min_conf, "trades": len(trades),
            "net_ticks_total": round(total, 2),
            "net_ticks_per_trade": round(float(pnl.mean()), 3) if len(pnl) else None,
            "win_rate": round(float((pnl > 0).mean()), 4) if len(pnl) else None,
            "random_same_rate": {"seeds": seeds, "mean": round(float(rnd.mean()), 2),
                                 "p05": round(float(np.percentile(rnd, 5)), 2),
                                 "p95": round(float(np.percentile(rnd, 95)), 2),
                                 "share_below_model": round(float((rnd < total).mean()), 3)}}


def classification(probs: np.ndarray, y: np.ndarray, prior: np.ndarray) -> dict:
    pred = probs.argmax(1)
    return {"rows": int(len(y)),
            "log_loss": round(log_loss(probs, y), 4),
            "prior_log_loss": round(log_loss(np.tile(prior, (len(y), 1)), y), 4),
            "accuracy": round(float((pred == y).mean()), 4) if len(y) else None,
            "prior_accuracy": round(float((y == int(np.argmax(prior))).mean()), 4) if len(y) else None,
            "class_share": [round(float((y == i).mean()), 4) for i in range(len(CLASSES))],
            "predicted_share": [round(float((pred == i).mean()), 4) for i in range(len(CLASSES))]}


def ev_by_threshold(t0_ns: np.ndarray, probs_rows: np.ndarray, lab: Labels, idx: np.ndarray,
                    grid=None) -> list[dict]:
    """Net ticks per trade of the rule at each threshold (validation rows, one position at a time)."""
    grid = np.round(np.arange(0.40, 0.91, 0.02), 2) if grid is None else grid
    out = []
    for c in grid:
        d = np.zeros(len(t0_ns), dtype=np.int64)
        d[idx] = signals(probs_rows, float(c))
        pnl = np.array([p for _, _, p in run_rule(t0_ns, d, lab, idx)])
        out.append({"min_confidence": float(c), "trades": int(len(pnl)),
                    "ev_ticks": round(float(pnl.mean()), 3) if len(pnl) else None})
    return out


def choose_threshold(table: list[dict], min_trades: int = 30) -> float | None:
    """The lowest threshold whose EV after costs is positive with at least `min_trades` trades,
    and stays positive at every higher threshold that still has that many. None: no such level."""
    ok = [r for r in table if r["trades"] >= min_trades]
    for i, r in enumerate(ok):
        if all(x["ev_ticks"] is not None and x["ev_ticks"] > 0 for x in ok[i:]):
            return r["min_confidence"]
    return None
