"""Would the inference worker start with this config's model? Loads the ONNX model and its
config exactly as the worker does at start (against the worker's feature list) and prints
one line. `scalper check` runs it; it opens no socket and places nothing.

    python -m services.inference.check [--config PATH]

Exit 0 with "<version> (N features, classes [...])"; 1 with the reason the worker would
refuse to start; 2 on a bad config.
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
        print(exc)
        return 1
    print(f"{model.version} ({model.n_features} features, classes {model.classes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
