"""Train the demo scalping model on recorded trades, then export it to ONNX.

    python -m services.inference.train --data data/real/ESM8_2018-05-07_trades.csv.gz --out models/

Pipeline (the live one, not a copy of it): trades -> tick-rule sides and derived
quotes -> BarAggregator 1 s bars -> batch_features. Label: direction of the close
move over `horizon` bars; |move| <= flat_ticks is the flat class. Rows before the
feature warm-up and rows without a full label horizon are dropped.

Split in time order, no shuffling across time: first 60 % train, next 20 %
validation (early stopping), last 20 % test; `horizon` rows are left out at each
boundary so no label looks into the next split. The scaler and the per-feature
training range come from the train split only.

Writes <out>/<name>.pt (state dict, scaler, feature names, label, metrics), then
runs the export (ONNX + config). Needs the `train` extra (torch, onnx).
"""
from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from services.inference.features import FEATURE_NAMES, WARMUP, bars_to_arrays, batch_features, segments
from services.inference.net import make_net
from services.inference.recorded import load_trades, recorded_bars

CLASSES = [-1, 0, 1]
RANGE_EXEMPT = {
    "tod_h": "one morning of data cannot span the trading day; a time-ordered split puts every later "
             "hour outside it, so time of day is reported but not gated",
}


def build_dataset(data: Path, horizon: int, flat_ticks: int):
    """(X raw features, y class index, forward move in ticks, bar start ns, bar count) of usable rows."""
    ticks = load_trades(data)
    bars = recorded_bars(ticks)
    a = bars_to_arrays(bars)
    xs, ys, moves, starts = [], [], [], []
    for seg in segments(a["start_ns"]):
        part = {k: v[seg] for k, v in a.items()}
        n = len(part["close_ticks"])
        if n < WARMUP + horizon:
            continue
        feats = batch_features(part)
        c = part["close_ticks"]
        rows = np.arange(WARMUP - 1, n - horizon)
        mv = c[rows + horizon] - c[rows]
        y = np.where(mv > flat_ticks, 2, np.where(mv < -flat_ticks, 0, 1))
        xs.append(feats[rows]); ys.append(y); moves.append(mv); starts.append(part["start_ns"][rows])
    if not xs:
        raise SystemExit(f"train: {data} has no segment long enough ({WARMUP + horizon} bars)")
    return (np.concatenate(xs), np.concatenate(ys), np.concatenate(moves), np.concatenate(starts),
            len(ticks), len(bars), a["start_ns"])


def split_indices(n: int, horizon: int, fractions=(0.6, 0.2)) -> tuple[slice, slice, slice]:
    a = int(n * fractions[0])
    b = int(n * (fractions[0] + fractions[1]))
    return slice(0, a), slice(a + horizon, b), slice(b + horizon, n)


def evaluate(probs: np.ndarray, y: np.ndarray, moves: np.ndarray, prior: np.ndarray,
             min_conf: float) -> dict:
    pred = probs.argmax(1)
    eps = 1e-12
    ll = float(-np.mean(np.log(probs[np.arange(len(y)), y] + eps)))
    ll_prior = float(-np.mean(np.log(prior[y] + eps)))
    conf = probs.max(1)
    direction = np.array(CLASSES)[pred]
    sig = (direction != 0) & (conf >= min_conf)
    signed = moves[sig] * direction[sig]
    return {
        "rows": int(len(y)),
        "accuracy": round(float((pred == y).mean()), 4),
        "majority_baseline_accuracy": round(float((y == np.argmax(prior)).mean()), 4),
        "log_loss": round(ll, 4),
        "prior_log_loss": round(ll_prior, 4),
        "class_share": [round(float((y == i).mean()), 4) for i in range(len(CLASSES))],
        "predicted_share": [round(float((pred == i).mean()), 4) for i in range(len(CLASSES))],
        f"signals_at_conf_{min_conf}": int(sig.sum()),
        "signal_hit_rate": round(float((signed > 0).mean()), 4) if sig.any() else None,
        "signal_mean_move_ticks": round(float(signed.mean()), 4) if sig.any() else None,
    }


def train(data: Path, out: Path, name: str = "scalper_v1", horizon: int = 30, flat_ticks: int = 0,
          hidden: tuple[int, ...] = (32, 32), epochs: int = 300, patience: int = 25, seed: int = 7,
          min_conf: float = 0.65) -> tuple[Path, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    X, y, moves, starts, n_ticks, n_bars, bar_starts = build_dataset(data, horizon, flat_ticks)
    tr, va, te = split_indices(len(y), horizon)
    mean = X[tr].mean(0)
    std = X[tr].std(0)
    constant = [FEATURE_NAMES[i] for i in np.flatnonzero(std < 1e-12)]
    std = np.where(std < 1e-12, 1.0, std)   # a feature constant in training: pass it through unscaled
    Z = ((X - mean) / std).astype(np.float32)
    prior = np.bincount(y[tr], minlength=3) / len(y[tr])

    net = make_net(X.shape[1], list(hidden), len(CLASSES))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    zt, yt = torch.from_numpy(Z[tr]), torch.from_numpy(y[tr])
    zv, yv = torch.from_numpy(Z[va]), torch.from_numpy(y[va])
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, stale = math.inf, None, 0, 0
    for epoch in range(epochs):
        net.train()
        for idx in torch.randperm(len(zt), generator=gen).split(256):   # shuffles within the train split only
            opt.zero_grad()
            loss = loss_fn(net(zt[idx]), yt[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vl = float(loss_fn(net(zv), yv))
        if vl < best - 1e-5:
            best, best_epoch, stale = vl, epoch, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(Z)), -1).numpy()
    metrics = {part: evaluate(probs[s], y[s], moves[s], prior, min_conf)
               for part, s in (("train", tr), ("validation", va), ("test", te))}

    def ny(ns: int) -> str:
        from services.inference.features import NY
        return datetime.fromtimestamp(ns / 1e9, tz=NY).strftime("%Y-%m-%d %H:%M:%S %Z")

    training = {
        "data": str(data.name), "ticks": int(n_ticks), "bars_1s": int(n_bars),
        "first_bar": ny(int(bar_starts[0])), "last_bar": ny(int(bar_starts[-1])),
        "rows": int(len(y)), "split": {
            "train": [ny(int(starts[tr][0])), ny(int(starts[tr][-1])), int(len(y[tr]))],
            "validation": [ny(int(starts[va][0])), ny(int(starts[va][-1])), int(len(y[va]))],
            "test": [ny(int(starts[te][0])), ny(int(starts[te][-1])), int(len(y[te]))]},
        "derivations": "size 1 per trade; aggressor by tick rule (uptick buy, downtick sell, unchanged = previous); "
                       "quote after each trade: buy -> bid = price - 1 tick, ask = price; "
                       "sell -> bid = price, ask = price + 1 tick",
        "optimizer": "Adam lr 1e-3 weight_decay 1e-4, batch 256, early stopping on validation log loss",
        "best_epoch": int(best_epoch), "seed": seed, "torch": str(torch.__version__),
    }
    out.mkdir(parents=True, exist_ok=True)
    ck_path = out / f"{name}.pt"
    torch.save({
        "name": name, "state_dict": net.state_dict(), "hidden": list(hidden),
        "feature_names": list(FEATURE_NAMES), "mean": mean.tolist(), "std": std.tolist(),
        "constant_features": constant, "classes": CLASSES,
        "label": {"horizon_bars": horizon, "bar_interval_s": 1, "flat_ticks": flat_ticks,
                  "rule": f"+1 if close[t+{horizon}] - close[t] > {flat_ticks} ticks, "
                          f"-1 if < -{flat_ticks}, else 0"},
        "thresholds": {"min_confidence_evaluated": min_conf},
        "feature_min": X[tr].min(0).tolist(), "feature_max": X[tr].max(0).tolist(),
        "range_exempt": RANGE_EXEMPT, "warmup_bars": WARMUP,
        "training": training, "metrics": metrics,
        "trained_on": datetime.now(timezone.utc).strftime("%Y%m%d"),
    }, ck_path)
    return ck_path, Z[te][:500]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--name", default="scalper_v1")
    ap.add_argument("--horizon", type=int, default=30, help="label horizon in 1 s bars")
    ap.add_argument("--flat-ticks", type=int, default=0, help="|move| <= this many ticks is 'flat'")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if not args.data.is_file():
        print(f"train: data file {args.data} not found", file=sys.stderr)
        return 2
    from services.inference.export import export
    ck_path, samples = train(args.data, args.out, args.name, args.horizon, args.flat_ticks, seed=args.seed)
    onnx_path, cfg_path, version = export(ck_path, args.out, samples=samples)
    import json
    metrics = json.loads(cfg_path.read_text())["metrics"]
    print(f"train: wrote {ck_path}, {onnx_path}, {cfg_path} ({version})")
    for part, m in metrics.items():
        print(f"  {part}: {json.dumps(m)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
