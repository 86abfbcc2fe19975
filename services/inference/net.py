"""The model's network: a plain MLP (Linear + ReLU layers, logits out). Training builds it,
the export rebuilds it from a checkpoint; both take it from here, so neither imports the
other. Needs the `train` extra (torch)."""
from __future__ import annotations


def make_net(n_in: int, hidden: list[int], n_out: int):
    import torch.nn as nn
    layers: list = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)
