"""The model lifecycle commands: record -> train -> evaluate -> shadow -> promote, and backtest.

    scalper model list                         every model in the registry, the active one marked
    scalper model train DATA... [--label bracket|sign] [--name N] [--folds K]
    scalper model evaluate MODEL DATA...       out-of-sample metrics of a registry model on new data
    scalper model promote MODEL                point model.path/model.config at it (atomic; checked)
    scalper backtest RECORDING [--model M]     the engine's rules over a recording -> the session report

DATA is a `.rec` feed recording (logs/ticks/) or the shipped trades CSV. MODEL is a registry
folder or a version name. Trained models go to models/registry/ and are never overwritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.config import ROOT, ConfigError, load_config

REGISTRY = ROOT / "models" / "registry"


def _cfg(path):
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2)


def _folder(name: str, registry: Path) -> Path:
    p = Path(name)
    for cand in (p, registry / name, ROOT / name):
        if (cand / "config.json").is_file():
            return cand
    raise SystemExit(f"model: {name} is not a registry folder or version under {registry}")


def cmd_list(args) -> int:
    from services.modelctl.registry import list_models
    cfg = _cfg(args.config)
    active = str(cfg.path(cfg.model.config).resolve())
    rows = list_models(args.registry)
    if not rows:
        print(f"no model in {args.registry}")
    for r in rows:
        mark = "*" if str((Path(r["folder"]) / "config.json").resolve()) == active else " "
        print(f"{mark} {r['version']:<34} {r['contract'] or '-':<18} label {r['label'] or '-':<7} "
              f"threshold {r['min_confidence']}  walk-forward EV {r['ev_ticks']} ticks/trade "
              f"({'positive' if r['ev_positive'] else 'NOT positive'})  rows {r['rows']}  {r['trained_on']}")
    return 0


def cmd_train(args) -> int:
    from common.brackets import BracketRule
    from services.inference.train import Hyper
    from services.modelctl.data import DataError
    from services.modelctl.pipeline import train_model
    from services.modelctl.registry import RegistryError
    cfg = _cfg(args.config)
    contract = args.contract or cfg.trading.contract
    hp = Hyper(hidden=tuple(int(h) for h in args.hidden.split(",") if h), seed=args.seed)
    try:
        folder = train_model([Path(d) for d in args.data], contract, BracketRule.from_config(cfg), args.registry,
                             args.name, args.label, args.horizon, hp, args.folds, args.embargo_s, args.seeds,
                             cfg.risk.atr_period)
    except (DataError, RegistryError) as exc:
        print(f"model train: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0


def cmd_evaluate(args) -> int:
    from common.brackets import BracketRule
    from services.modelctl.evaluate import evaluate
    from services.modelctl.registry import save_evaluation
    cfg = _cfg(args.config)
    folder = _folder(args.model, args.registry)
    result = evaluate(folder, [Path(d) for d in args.data], BracketRule.from_config(cfg), cfg.risk.atr_period)
    path = save_evaluation(folder, result)
    c = result["classification"]
    r = result["rule"]
    print(f"{result['version']} on {len(result['sources'])} source(s), {c['rows']} rows: log loss {c['log_loss']} "
          f"(prior {c['prior_log_loss']}), accuracy {c['accuracy']} (prior {c['prior_accuracy']}); rule at "
          f"{r['min_confidence']}: {r['trades']} trades, {r['net_ticks_total']} net ticks "
          f"(random same rate: mean {r['random_same_rate']['mean']}); inputs out of range {result['rows_out_of_range']}")
    print(path)
    return 0


def cmd_promote(args) -> int:
    from services.inference.features import FEATURE_NAMES
    from services.modelctl.registry import RegistryError, promote, read_config
    cfg = _cfg(args.config)
    folder = _folder(args.model, args.registry)
    active = None
    try:
        active = read_config(cfg.path(cfg.model.config).parent) if cfg.path(cfg.model.config).name == "config.json" \
            else json.loads(cfg.path(cfg.model.config).read_text())
    except Exception:
        active = None
    try:
        version = promote(folder, Path(cfg.source), ROOT, cfg.trading.contract, active, list(FEATURE_NAMES))
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"promoted {version}: {cfg.source} now points at {folder}; restart inference to load it")
    return 0


def cmd_backtest(args) -> int:
    from services.modelctl.backtest import run_backtest
    cfg = _cfg(args.config)
    res = run_backtest(cfg, Path(args.recording), model_path=args.model, out_dir=Path(args.out) if args.out else None,
                       min_confidence=args.min_confidence)
    print(json.dumps(res, indent=2))
    return 0


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="scalper model", description=__doc__.splitlines()[0])
    if not any(a.dest == "config" for a in p._actions):
        p.add_argument("--config", default=None)
    p.add_argument("--registry", type=Path, default=REGISTRY)
    sub = p.add_subparsers(dest="model_cmd", required=True)
    sub.add_parser("list", help="models in the registry").set_defaults(fn=cmd_list)
    t = sub.add_parser("train", help="train, walk-forward evaluate and register a model")
    t.add_argument("data", nargs="+")
    t.add_argument("--contract", default=None, help="contract it will trade (default trading.contract)")
    t.add_argument("--name", default="scalper")
    t.add_argument("--label", choices=["bracket", "sign"], default="bracket")
    t.add_argument("--horizon", type=int, default=30, help="sign label: bars ahead")
    t.add_argument("--hidden", default="32", help="hidden layer widths, comma separated ('' = logistic)")
    t.add_argument("--folds", type=int, default=4)
    t.add_argument("--embargo-s", type=int, default=60)
    t.add_argument("--seeds", type=int, default=200, help="random-entry baseline seeds")
    t.add_argument("--seed", type=int, default=7)
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("evaluate", help="metrics of a registry model on other data")
    e.add_argument("model")
    e.add_argument("data", nargs="+")
    e.set_defaults(fn=cmd_evaluate)
    pr = sub.add_parser("promote", help="make a registry model the one the pipeline loads")
    pr.add_argument("model")
    pr.set_defaults(fn=cmd_promote)
    return p


def backtest_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="scalper backtest")
    if not any(a.dest == "config" for a in p._actions):
        p.add_argument("--config", default=None)
    p.add_argument("recording", help=".rec recording or the shipped CSV")
    p.add_argument("--model", default=None, help="registry folder (default: model.path of the config)")
    p.add_argument("--out", default=None, help="directory for the session files (default logs/backtest/<day>)")
    p.add_argument("--min-confidence", type=float, default=None, help="default: model.min_confidence")
    p.set_defaults(fn=cmd_backtest)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = None
    if "--config" in argv:                       # accepted anywhere: scalper --config X model list
        i = argv.index("--config")
        config = argv[i + 1] if i + 1 < len(argv) else None
        del argv[i:i + 2]
    pre = ["--config", config] if config else []
    if argv and argv[0] == "backtest":
        args = backtest_parser().parse_args(pre + argv[1:])
    else:
        args = build_parser().parse_args(pre + (argv[1:] if argv and argv[0] == "model" else argv))
    return int(args.fn(args) or 0)
