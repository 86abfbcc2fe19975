"""Would the inference worker start with this config's model? Loads the ONNX model and its
config exactly as the worker does at start (against the worker's feature list) and prints
what it found in `scalper check`'s format, which prints these lines as they are:

    python -m services.inference.check [--config PATH]
    [ok] model: <version> (N features, classes [...])        exit 0
    [FAIL] model: <why the worker would refuse to start>     exit 1
    [FAIL] model edge: <why live trading is refused>         exit 1 (live mode; a [warn] in sim)

Exit 2 (one line on stderr) on a bad config. Opens no socket and places nothing.
"""
from __future__ import annotations

import sys

from common.service import tool_config
from services.inference.features import FEATURE_NAMES
from services.inference.model import ModelError, live_gate, load_model


def main(argv: list[str] | None = None) -> int:
    cfg, _ = tool_config("python -m services.inference.check", __doc__.splitlines()[0], argv)
    try:
        model = load_model(cfg.path(cfg.model.path), cfg.path(cfg.model.config), list(FEATURE_NAMES))
    except ModelError as exc:
        print(f"[FAIL] model: {exc}")
        return 1
    print(f"[ok] model: {model.version} ({model.n_features} features, classes {model.classes})")
    ok, why = live_gate(cfg.api.mode, model.config, cfg.model.allow_unproven_model)
    if why:
        print(f"[FAIL] model edge: {why}" if not ok else f"[warn] {why}")
    if cfg.model.demo_threshold:
        if cfg.api.mode == "live" and not cfg.model.allow_unproven_model:
            ok = False
            print("[FAIL] model edge: model.demo_threshold is set in live mode; set the model's validated min_confidence")
        else:
            print(f"[warn] model.min_confidence {cfg.model.min_confidence} is a DEMO threshold (model.demo_threshold)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
