"""The model registry: one folder per trained model, never overwritten; promotion by config.

    models/registry/<version>/model.onnx     the graph (standardized features in, probs out)
                              config.json    features, scaler, classes, label, contract, threshold,
                                             ranges, data hashes, code commit, hyperparameters, metrics
                              card.md        the model card, generated from config.json
                              evaluations/   one JSON per `scalper model evaluate` run

<version> is <name>-<YYYYMMDD>-<first 8 hex of the ONNX sha256>; the loader refuses a
config whose version does not match its ONNX file. A folder that exists is never
written again. `promote` points `model.path` / `model.config` of the YAML at a folder,
rewriting the file atomically (temp file + rename), and refuses a model whose feature
list differs from the worker's or from the active model's, or that was trained for
another contract than `trading.contract`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from common.instruments import instrument_for

ONNX_NAME, CONFIG_NAME, CARD_NAME = "model.onnx", "config.json", "card.md"


class RegistryError(RuntimeError):
    """A registry operation refused; the text says why and what to do."""


def write_model(registry: Path, name: str, onnx: bytes, cfg: dict, day: str | None = None) -> Path:
    digest = hashlib.sha256(onnx).hexdigest()
    day = day or datetime.now(timezone.utc).strftime("%Y%m%d")
    version = f"{name}-{day}-{digest[:8]}"
    folder = Path(registry) / version
    if folder.exists():
        raise RegistryError(f"registry: {folder} exists already (same name, day and weights); nothing overwritten")
    cfg = {"version": version, "onnx_sha256": digest,
           "input": {"name": "features", "shape": ["batch", len(cfg["feature_names"])], "dtype": "float32"},
           "output": {"name": "probs", "shape": ["batch", len(cfg["classes"])],
                      "meaning": "calibrated softmax class probabilities"},
           "scaling": "outside",
           "scaling_note": "the worker feeds (raw - scaler.mean) / scaler.std; the graph holds no scaler",
           **cfg}
    tmp = folder.with_name(f".{version}.tmp")
    tmp.mkdir(parents=True)
    (tmp / ONNX_NAME).write_bytes(onnx)
    (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
    (tmp / CARD_NAME).write_text(model_card(cfg))
    os.replace(tmp, folder)          # the folder appears whole or not at all
    return folder


def read_config(folder: Path) -> dict:
    p = Path(folder) / CONFIG_NAME
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"registry: {p} cannot be read: {exc}") from None


def list_models(registry: Path) -> list[dict]:
    out = []
    for folder in sorted(Path(registry).glob("*/")):
        if folder.name.startswith(".") or not (folder / CONFIG_NAME).is_file():
            continue
        c = read_config(folder)
        edge = c.get("edge", {})
        out.append({"version": c.get("version"), "folder": str(folder), "contract": c.get("contract", {}).get("id"),
                    "label": c.get("label", {}).get("type"), "min_confidence": c.get("thresholds", {}).get("min_confidence"),
                    "ev_ticks": edge.get("walk_forward_ev_ticks_per_trade"), "ev_positive": edge.get("ev_positive"),
                    "rows": c.get("training", {}).get("rows"), "trained_on": c.get("training", {}).get("trained_on")})
    return out


def check_promotable(new: dict, active: dict | None, contract: str, code_features: list[str]) -> None:
    """Raise RegistryError naming the mismatch (feature list, contract)."""
    names = new.get("feature_names")
    if names != list(code_features):
        raise RegistryError(f"promote refused: {new.get('version')} has features {names}, the worker computes "
                            f"{list(code_features)}")
    if active is not None and active.get("feature_names") != names:
        raise RegistryError(f"promote refused: feature list differs from the active model {active.get('version')}")
    want = instrument_for(contract).symbol
    got = (new.get("contract") or {}).get("symbol")
    if got != want:
        raise RegistryError(f"promote refused: {new.get('version')} was trained for {got or 'an unknown contract'}, "
                            f"trading.contract {contract} is {want}")


_KEY = re.compile(r"^(?P<indent>\s+)(?P<key>path|config):\s*(?P<val>\"[^\"]*\"|'[^']*'|\S+)(?P<rest>.*)$")


def rewrite_model_paths(yaml_text: str, onnx_path: str, config_path: str) -> str:
    """The YAML with model.path and model.config replaced; comments and everything else kept."""
    out, in_model, done = [], False, set()
    for line in yaml_text.splitlines(keepends=True):
        if re.match(r"^\S", line):
            in_model = line.startswith("model:")
        m = _KEY.match(line.rstrip("\n")) if in_model else None
        if m and m["key"] not in done:
            val = onnx_path if m["key"] == "path" else config_path
            line = f'{m["indent"]}{m["key"]}: "{val}"{m["rest"]}\n'
            done.add(m["key"])
        out.append(line)
    if done != {"path", "config"}:
        raise RegistryError("promote: the config file has no model.path and model.config lines to rewrite")
    return "".join(out)


def promote(folder: Path, yaml_path: Path, root: Path, contract: str, active_cfg: dict | None,
            code_features: list[str]) -> str:
    """Point the YAML at `folder` (atomically). Returns the new version."""
    folder = Path(folder)
    if not (folder / ONNX_NAME).is_file():
        raise RegistryError(f"promote: {folder} holds no {ONNX_NAME}")
    new = read_config(folder)
    check_promotable(new, active_cfg, contract, code_features)
    rel = lambda p: os.path.relpath(p, root) if str(Path(p).resolve()).startswith(str(Path(root).resolve())) else str(p)
    text = Path(yaml_path).read_text()
    updated = rewrite_model_paths(text, rel((folder / ONNX_NAME).resolve()), rel((folder / CONFIG_NAME).resolve()))
    tmp = Path(yaml_path).with_name(f".{Path(yaml_path).name}.{os.getpid()}.tmp")
    tmp.write_text(updated)
    os.replace(tmp, yaml_path)
    return new["version"]


def save_evaluation(folder: Path, result: dict) -> Path:
    """evaluations/<UTC time>-<data hash>.json: a new file per run, never an overwrite."""
    d = Path(folder) / "evaluations"
    d.mkdir(exist_ok=True)
    tag = "-".join(s["sha256"][:8] for s in result.get("sources", []))[:40] or "data"
    p = d / f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{tag}.json"
    n = 1
    while p.exists():
        p = p.with_name(f"{p.stem}-{n}.json")
        n += 1
    p.write_text(json.dumps(result, indent=2) + "\n")
    return p


# ---------------------------------------------------------------- model card

def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def model_card(c: dict) -> str:
    """The card written next to the model: what it is, its data, and its numbers, plainly."""
    wfm = c["metrics"]["walk_forward"]
    ov = wfm["overall"]
    cl = ov["classification"]
    rule = ov["rule_at_validation_thresholds"]
    src = c["training"]["sources"]
    edge = c["edge"]
    lines = [
        f"# Model card: {c['version']}", "",
        f"Trained {c['training']['trained_on']} from code commit `{c['code'].get('commit')}`"
        f"{' (with uncommitted changes)' if c['code'].get('dirty') else ''}, for "
        f"{c['contract']['symbol']} ({c['contract']['id']}: tick value {c['contract']['tick_value_cents']} cents, "
        f"round trip fee {c['contract']['round_trip_fee_cents']} cents).", "",
        "## Verdict", "",
        ("**Walk-forward expected value after costs is positive** "
         if edge["ev_positive"] else "**No measured edge: the walk-forward expected value after costs is not positive.** ")
        + f"({edge['walk_forward_ev_ticks_per_trade']} ticks per trade over {edge['trades']} trades). "
        + f"{len(src)} data source(s), {c['training']['rows']} labelled rows: "
        + ("this is far too little data to claim an edge either way. " if c['training']['rows'] < 100_000 else "")
        + "Live mode refuses a model without a positive walk-forward EV unless `model.allow_unproven_model` is set.",
        "", "## Data", "", "| file | sha256 | kind | bars | rows | first bar | last bar |", "|---|---|---|---|---|---|---|",
        *[f"| {s['file']} | `{s['sha256'][:16]}…` | {s['kind']} | {s['bars_1s']} | {s['rows']} | {s['first_bar']} | "
          f"{s['last_bar']} |" for s in src],
        "",
        *([f"- {s['file']}: {s['derived']}." for s in src if s.get("derived")]),
        "", "## Label", "", f"{c['label']['rule']}.",
        f"Class shares (short wins, neither, long wins): {c['training']['class_share']}.", "",
        "## Inputs", "",
        f"{len(c['feature_names'])} features from 1-second bars ({', '.join(c['feature_names'])}); definitions in "
        "services/inference/features.py. No time-of-day input. Every input is range-gated: "
        f"{c['feature_range']['source']}; {_pct(c['feature_range']['training_rows_outside'])} of the training rows "
        "fall outside it.", "",
        "## Walk-forward (purged, embargoed)", "",
        f"{ov['folds']} folds, {ov['test_rows']} test rows, embargo {c['hyperparameters']['embargo_s']} s.", "",
        "| fold | test window | log loss | prior | accuracy | prior | threshold (val) | trades | net ticks | "
        "top decile (val level): trades / net ticks / random same rate mean [p05, p95] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in wfm["folds"]:
        k, r5 = f["classification"], f["rule_at_top_decile"]
        rnd = r5["random_same_rate"]
        lines.append(f"| {f['fold']} | {f['test'][0]} – {f['test'][1][11:]} | {k['log_loss']} | {k['prior_log_loss']} | "
                     f"{k['accuracy']} | {k['prior_accuracy']} | {f['threshold_from_validation']} | "
                     f"{f['rule_at_validation_threshold']['trades']} | {f['rule_at_validation_threshold']['net_ticks_total']} | "
                     f"@{r5['min_confidence']}: {r5['trades']} / {r5['net_ticks_total']} / {rnd['mean']} "
                     f"[{rnd['p05']}, {rnd['p95']}] |")
    lines += [
        f"| all | | {cl['log_loss']} | {cl['prior_log_loss']} | {cl['accuracy']} | {cl['prior_accuracy']} | | "
        f"{rule['trades']} | {rule['net_ticks_total']} | |", "",
        "Reliability (pooled test rows, calibrated):", "", "| confidence | rows | mean confidence | hit rate |",
        "|---|---|---|---|",
        *[f"| {r['bin'][0]}–{r['bin'][1]} | {r['rows']} | {r['mean_confidence']} | {r['hit_rate']} |"
          for r in ov["reliability"]],
        "", "## Threshold", "",
        f"`min_confidence` = {c['thresholds']['min_confidence']} ({c['thresholds']['chosen_on']}; lowest level with "
        "at least 30 trades whose EV after costs is positive there and above). None means no such level exists.",
        "", "## Calibration", "", f"{c['calibration']['method']}: T = {c['calibration']['temperature']}.", "",
        "## Hyperparameters", "", "```", json.dumps(c["hyperparameters"], indent=1), "```", "",
        "## Limits", "",
        "- Overlapping label windows (up to the maximum hold) make neighbouring rows dependent: the effective "
        "sample is far smaller than the row count.",
        "- The rule evaluated here is entry + bracket + maximum hold; the engine also exits when the model turns "
        "against the position. `scalper backtest` runs the engine's full rules over a recording.",
        "",
    ]
    return "\n".join(lines)
