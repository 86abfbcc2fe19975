"""Fit the scalping model: a small MLP in numpy, temperature calibration, robust feature ranges.

Why numpy and not torch: the network is 14 -> 32 -> 3 on a few thousand rows per day;
full-batch Adam in numpy trains it in seconds, deterministically (one seed, no threads),
without a 700 MB dependency that pip may not even have for this Python. The ONNX graph
it exports (services/inference/export.py) is the same Gemm/Relu/Softmax interface the
worker has always served, so nothing on the live side changes.

- `fit_mlp`: softmax cross-entropy, Adam, L2 weight decay, early stopping on a
  validation log loss (patience), the best epoch kept.
- `fit_temperature`: multiclass Platt scaling with one parameter (logits / T), fitted on
  out-of-sample predictions; folded into the last layer, so the graph emits calibrated
  probabilities and the worker is unchanged.
- `robust_range`: per-feature [q_lo - m*span, q_hi + m*span] from quantiles over all
  training rows: one outlier does not widen the gate, and a new day is not blocked for
  being a little different from one morning.
The orchestration (data, labels, walk-forward, registry) is services/modelctl/pipeline.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Layers = list[tuple[np.ndarray, np.ndarray]]      # (W [out, in], b [out]) per Gemm


@dataclass(frozen=True)
class Hyper:
    hidden: tuple[int, ...] = (32,)
    lr: float = 3e-3
    weight_decay: float = 1e-3
    epochs: int = 400
    patience: int = 30
    seed: int = 7

    def as_dict(self) -> dict:
        return {"hidden": list(self.hidden), "lr": self.lr, "weight_decay": self.weight_decay,
                "epochs": self.epochs, "patience": self.patience, "seed": self.seed,
                "optimizer": "Adam (full batch), softmax cross-entropy, early stopping on validation log loss"}


def logits(layers: Layers, Z: np.ndarray) -> np.ndarray:
    h = Z
    for i, (W, b) in enumerate(layers):
        h = h @ W.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(1, keepdims=True)


def probs(layers: Layers, Z: np.ndarray) -> np.ndarray:
    return softmax(logits(layers, Z))


def _loss(layers: Layers, Z: np.ndarray, y: np.ndarray) -> float:
    p = probs(layers, Z)
    return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))


def fit_mlp(Z: np.ndarray, y: np.ndarray, Zv: np.ndarray, yv: np.ndarray, n_classes: int,
            hp: Hyper = Hyper()) -> tuple[Layers, int]:
    """Train; returns (layers of the best validation epoch, that epoch)."""
    rng = np.random.default_rng(hp.seed)
    sizes = [Z.shape[1], *hp.hidden, n_classes]
    layers: Layers = [(rng.normal(0, np.sqrt(2.0 / a), (b, a)), np.zeros(b)) for a, b in zip(sizes[:-1], sizes[1:])]
    m = [(np.zeros_like(W), np.zeros_like(b)) for W, b in layers]
    v = [(np.zeros_like(W), np.zeros_like(b)) for W, b in layers]
    onehot = np.eye(n_classes)[y]
    best, best_layers, best_epoch, stale = np.inf, [(W.copy(), b.copy()) for W, b in layers], 0, 0
    b1, b2 = 0.9, 0.999
    for epoch in range(hp.epochs):
        acts = [Z]
        h = Z
        for i, (W, b) in enumerate(layers):
            h = h @ W.T + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0.0)
            acts.append(h)
        grad = (softmax(acts[-1]) - onehot) / len(y)
        for i in range(len(layers) - 1, -1, -1):
            W, b = layers[i]
            gW = grad.T @ acts[i] + hp.weight_decay * W
            gb = grad.sum(0)
            if i > 0:
                grad = (grad @ W) * (acts[i] > 0)
            t = epoch + 1
            mW, mb = m[i]
            vW, vb = v[i]
            mW = b1 * mW + (1 - b1) * gW
            mb = b1 * mb + (1 - b1) * gb
            vW = b2 * vW + (1 - b2) * gW * gW
            vb = b2 * vb + (1 - b2) * gb * gb
            m[i], v[i] = (mW, mb), (vW, vb)
            W = W - hp.lr * (mW / (1 - b1 ** t)) / (np.sqrt(vW / (1 - b2 ** t)) + 1e-8)
            b = b - hp.lr * (mb / (1 - b1 ** t)) / (np.sqrt(vb / (1 - b2 ** t)) + 1e-8)
            layers[i] = (W, b)
        vl = _loss(layers, Zv, yv) if len(yv) else _loss(layers, Z, y)
        if vl < best - 1e-6:
            best, best_epoch, stale = vl, epoch, 0
            best_layers = [(W.copy(), b.copy()) for W, b in layers]
        else:
            stale += 1
            if stale >= hp.patience:
                break
    return best_layers, best_epoch


def fit_temperature(lg: np.ndarray, y: np.ndarray) -> float:
    """T minimising the log loss of softmax(logits / T) (golden section on log T in [-3, 3])."""
    def nll(log_t: float) -> float:
        p = softmax(lg / np.exp(log_t))
        return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    a, b = -3.0, 3.0
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(80):
        if nll(c) < nll(d):
            b = d
        else:
            a = c
        c, d = b - g * (b - a), a + g * (b - a)
    return float(np.exp((a + b) / 2))


def with_temperature(layers: Layers, t: float) -> Layers:
    """The same network with its logits divided by t (the last Gemm scaled)."""
    W, b = layers[-1]
    return [*layers[:-1], (W / t, b / t)]


def robust_range(X: np.ndarray, q: float = 0.005, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    lo = np.quantile(X, q, axis=0)
    hi = np.quantile(X, 1 - q, axis=0)
    span = hi - lo
    return lo - margin * span, hi + margin * span
