"""Would the inference worker start with this config's model? Loads the ONNX model and its
config exactly as the worker does at start (against the worker's feature list) and prints
what it found in `scalper check`'s format, which prints these lines as they are:

    python -m services.inference.check [--config PATH]
    [ok] model: <version> (N features, classes [...])        exit 0
    [FAIL] model: <why the worker would refuse to start>     exit 1

Exit 2 (one line on stderr) on a bad config. Opens no socket and places nothing.
"""
from __future__ import annotations

import argparse
import sys

from common.config import ConfigError, load_config
from services.inference.features import FEATURE_NAMES
from services.inference.model import ModelError, load_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.inference.check", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None, help="YAML config (default: $SCALPER_CONFIG or config/live_trading.yaml)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        model = load_model(cfg.path(cfg.model.path), cfg.path(cfg.model.config), list(FEATURE_NAMES))
    except ModelError as exc:
        print(f"[FAIL] model: {exc}")
        return 1
    print(f"[ok] model: {model.version} ({model.n_features} features, classes {model.classes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
