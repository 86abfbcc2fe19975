"""`scalper model train | list | evaluate | promote` end to end on hand-built recordings of two days."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from common.cli import main as scalper
from common.config import load_config
from services.inference.features import FEATURE_NAMES
from services.inference.model import load_model
from tests.unit._recording_kit import T0, write_recording

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400 * 1_000_000_000


@pytest.fixture(autouse=True)
def _message_cache_in_tmp(tmp_path, monkeypatch):
    from services.modelctl import data
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")


def test_train_list_evaluate_promote(tmp_path, capsys):
    recs = [write_recording(tmp_path / f"MESM8_2018-05-0{7 + d}.rec", minutes=40, seed=10 + d, start_ns=T0 + d * DAY)
            for d in range(3)]
    raw = yaml.safe_load((ROOT / "config/live_trading.yaml").read_text())
    raw["trading"]["contract"] = "CON.F.US.MES.M18"
    cfg_path = tmp_path / "live.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    reg = tmp_path / "registry"
    common = ["--config", str(cfg_path)]

    assert scalper(common + ["model", "--registry", str(reg), "train", str(recs[0]), str(recs[1]),
                             "--folds", "2", "--seeds", "10", "--name", "t"]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert folder.parent == reg and folder.name.startswith("t-")
    c = json.loads((folder / "config.json").read_text())
    assert [s["file"] for s in c["training"]["sources"]] == [recs[0].name, recs[1].name]
    assert all(s["kind"] == "recording" and len(s["sha256"]) == 64 for s in c["training"]["sources"])
    assert c["contract"]["symbol"] == "MES" and c["label"]["type"] == "bracket"
    assert c["metrics"]["walk_forward"]["folds"] and "edge" in c and c["code"]["commit"]   # a fold whose purged
    assert c["hyperparameters"]["folds"] == 2                                  # training is too short is skipped
    load_model(folder / "model.onnx", folder / "config.json", list(FEATURE_NAMES))

    assert scalper(common + ["model", "--registry", str(reg), "list"]) == 0
    assert c["version"] in capsys.readouterr().out

    assert scalper(common + ["model", "--registry", str(reg), "evaluate", c["version"], str(recs[2])]) == 0
    out = capsys.readouterr().out
    assert "log loss" in out and len(list((folder / "evaluations").glob("*.json"))) == 1

    assert scalper(common + ["model", "--registry", str(reg), "promote", c["version"]]) == 0
    promoted = load_config(cfg_path)
    assert Path(promoted.model.path) == (folder / "model.onnx").resolve()
    assert scalper(common + ["model", "--registry", str(reg), "list"]) == 0
    assert f"* {c['version']}" in capsys.readouterr().out                    # the active one is starred
