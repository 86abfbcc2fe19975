"""Registry folders are never overwritten; promotion is atomic and refused on a mismatch; the live edge gate."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.config import ModelConfig, load_config
from services.inference.features import FEATURE_NAMES
from services.inference.model import OVERRIDE_KEY, live_gate, load_model
from services.modelctl.registry import RegistryError, list_models, promote, rewrite_model_paths, write_model

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / ModelConfig().config).parent


@pytest.fixture
def registry(tmp_path):
    reg = tmp_path / "registry"
    reg.mkdir()
    shutil.copytree(SHIPPED, reg / SHIPPED.name)
    return reg


def test_the_shipped_model_is_a_registry_folder_with_its_lineage(registry):
    (row,) = list_models(registry)
    cfg = json.loads((SHIPPED / "config.json").read_text())
    assert row["version"] == cfg["version"] == SHIPPED.name
    assert len(cfg["training"]["sources"][0]["sha256"]) == 64 and cfg["code"]["commit"]
    assert {"hidden", "lr", "seed", "folds", "embargo_s"} <= set(cfg["hyperparameters"])
    assert cfg["metrics"]["walk_forward"]["folds"] and (SHIPPED / "card.md").is_file()
    load_model(SHIPPED / "model.onnx", SHIPPED / "config.json", list(FEATURE_NAMES))


def test_write_model_never_overwrites(registry):
    cfg = json.loads((SHIPPED / "config.json").read_text())
    data = (SHIPPED / "model.onnx").read_bytes()
    day = cfg["version"].split("-")[-2]
    name = cfg["version"].rsplit("-", 2)[0]
    with pytest.raises(RegistryError, match="exists already"):
        write_model(registry, name, data, cfg, day=day)


def test_promote_rewrites_the_yaml_atomically_and_refuses_mismatches(registry, tmp_path):
    yaml = tmp_path / "live.yaml"
    text = (ROOT / "config/live_trading.yaml").read_text()
    yaml.write_text(text)
    folder = registry / SHIPPED.name
    active = json.loads((SHIPPED / "config.json").read_text())
    v = promote(folder, yaml, tmp_path, "CON.F.US.MES.H26", active, list(FEATURE_NAMES))
    new = yaml.read_text()
    assert v == SHIPPED.name and f'path: "registry/{v}/model.onnx"' in new and f'config: "registry/{v}/config.json"' in new
    assert new.count("\n") == text.count("\n") and "min_confidence" in new      # everything else kept
    cfg = load_config(yaml)
    assert cfg.model.path == f"registry/{v}/model.onnx"
    with pytest.raises(RegistryError, match="trained for MES, trading.contract CON.F.US.MNQ.H26 is MNQ"):
        promote(folder, yaml, tmp_path, "CON.F.US.MNQ.H26", active, list(FEATURE_NAMES))
    with pytest.raises(RegistryError, match="feature list differs from the active model"):
        promote(folder, yaml, tmp_path, "CON.F.US.MES.H26", {**active, "feature_names": ["x"]}, list(FEATURE_NAMES))
    assert yaml.read_text() == new                                             # a refusal changes nothing


def test_rewrite_touches_only_the_model_section():
    text = 'api:\n  path: "keep"\nmodel:\n  path: "a.onnx"   # note\n  config: b.json\n  min_confidence: 0.6\n'
    out = rewrite_model_paths(text, "x/model.onnx", "x/config.json")
    assert out == 'api:\n  path: "keep"\nmodel:\n  path: "x/model.onnx"   # note\n  config: "x/config.json"\n  min_confidence: 0.6\n'


def test_live_mode_refuses_a_model_without_a_positive_walk_forward_ev():
    cfg = json.loads((SHIPPED / "config.json").read_text())
    ok, why = live_gate("live", cfg, allow_unproven=False)
    assert not ok and OVERRIDE_KEY in why and "no measured edge" in why
    assert live_gate("live", cfg, allow_unproven=True)[0]
    assert live_gate("sim", cfg, allow_unproven=False)[0]
    proven = {**cfg, "edge": {"walk_forward_ev_ticks_per_trade": 0.4, "ev_positive": True, "trades": 80}}
    assert live_gate("live", proven, allow_unproven=False) == (True, None)


def test_scalper_run_refuses_live_mode_with_the_demo_model(tmp_path, monkeypatch, capsys):
    import yaml
    from common.cli import main as scalper
    raw = yaml.safe_load((ROOT / "config/live_trading.yaml").read_text())
    raw["api"].update({"mode": "live", "account_id": 1, "base_url": "https://api.topstepx.com",
                       "ws_url": "https://rtc.topstepx.com/hubs/market", "user_hub_url": "https://rtc.topstepx.com/hubs/user"})
    raw["model"]["path"] = str(SHIPPED / "model.onnx")
    raw["model"]["config"] = str(SHIPPED / "config.json")
    p = tmp_path / "live.yaml"
    p.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr("os.execv", lambda *a: pytest.fail("supervisord must not start"))
    assert scalper(["--config", str(p), "run"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "no measured edge" in err and OVERRIDE_KEY in err
