"""Model loading: the shipped model works, every inconsistency is refused with its own message."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from common.config import ModelConfig
import pytest

from services.inference.features import FEATURE_NAMES
from services.inference.model import ModelError, load_model

ROOT = Path(__file__).resolve().parents[2]
ONNX = ROOT / ModelConfig().path
CFG = ROOT / ModelConfig().config


@pytest.fixture
def copy(tmp_path):
    """(onnx path, config path, config dict, save(cfg)) of a private copy of the shipped model."""
    onnx, cfg = tmp_path / "m.onnx", tmp_path / "m.json"
    shutil.copy(ONNX, onnx)
    shutil.copy(CFG, cfg)
    data = json.loads(cfg.read_text())

    def save(d: dict) -> None:
        cfg.write_text(json.dumps(d))
    return onnx, cfg, data, save


def test_shipped_model_loads_and_scores():
    m = load_model(ONNX, CFG, list(FEATURE_NAMES))
    assert m.feature_names == list(FEATURE_NAMES) and m.classes == [-1, 0, 1]
    assert m.version == json.loads(CFG.read_text())["version"] and m.version.endswith(hashlib.sha256(ONNX.read_bytes()).hexdigest()[:8])
    p = m.predict(m.mean.copy())
    assert p.shape == (3,) and abs(float(p.sum()) - 1) < 1e-5 and np.all(p > 0)


def test_io_binding_path_equals_plain_session_run():
    m = load_model(ONNX, CFG)
    rng = np.random.default_rng(1)
    for _ in range(20):
        raw = m.mean + rng.normal(0, 1, m.n_features) / m.inv_std
        got = m.predict(raw).copy()
        x = ((raw - m.mean) * m.inv_std).astype(np.float32)[None, :]
        want = m.session.run(["probs"], {"features": x})[0][0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_out_of_range_names_the_features_and_gates_every_input():
    m = load_model(ONNX, CFG)
    raw = np.array(m.config["scaler"]["mean"])
    assert m.out_of_range(raw) == []
    assert np.all(np.isfinite(m.range_lo)) and np.all(np.isfinite(m.range_hi))   # no input is exempt
    i_rv = FEATURE_NAMES.index("rv_60")
    raw[i_rv] = m.range_hi[i_rv] + 1
    assert m.out_of_range(raw) == ["rv_60"]
    raw[0] = np.nan
    assert m.out_of_range(raw) == ["ret_1", "rv_60"]


def test_missing_model_file(copy):
    onnx, cfg, _, _ = copy
    onnx.unlink()
    with pytest.raises(ModelError, match=r"model file .*m\.onnx not found"):
        load_model(onnx, cfg)


def test_missing_config(copy):
    onnx, cfg, _, _ = copy
    cfg.unlink()
    with pytest.raises(ModelError, match=r"model config .*m\.json not found"):
        load_model(onnx, cfg)


def test_config_not_json(copy):
    onnx, cfg, _, _ = copy
    cfg.write_text('{"version": "x",')
    with pytest.raises(ModelError, match="is not valid JSON"):
        load_model(onnx, cfg)


def test_config_missing_key(copy):
    onnx, cfg, data, save = copy
    del data["scaler"]
    save(data)
    with pytest.raises(ModelError, match="missing key.*scaler"):
        load_model(onnx, cfg)


def test_corrupt_model_file(copy):
    onnx, cfg, data, save = copy
    onnx.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    data["version"] = "scalper_v1-x-" + hashlib.sha256(onnx.read_bytes()).hexdigest()[:8]
    save(data)
    with pytest.raises(ModelError, match="is not a loadable ONNX model"):
        load_model(onnx, cfg)


def test_model_and_config_from_different_exports(copy):
    onnx, cfg, data, save = copy
    data["version"] = "scalper_v1-20250101-deadbeef"
    save(data)
    with pytest.raises(ModelError, match=r"sha256 [0-9a-f]{8}\) is not the one .* describes"):
        load_model(onnx, cfg)


def test_input_width_mismatch(copy):
    onnx, cfg, data, save = copy
    for key in ("mean", "std"):
        data["scaler"][key] = data["scaler"][key][:-1]
    for key in ("min", "max"):
        data["feature_range"][key] = data["feature_range"][key][:-1]
    data["feature_names"] = data["feature_names"][:-1]
    data["feature_range"]["exempt"] = {}
    save(data)
    with pytest.raises(ModelError, match="input 'features' is 14 wide, the config lists 13 features"):
        load_model(onnx, cfg)


def test_feature_list_differs_from_the_code(copy):
    onnx, cfg, data, save = copy
    data["feature_names"][2], data["feature_names"][3] = data["feature_names"][3], data["feature_names"][2]
    save(data)
    with pytest.raises(ModelError, match="feature list differs from the worker's \\(position 2"):
        load_model(onnx, cfg, list(FEATURE_NAMES))


def test_scaler_length_mismatch(copy):
    onnx, cfg, data, save = copy
    data["scaler"]["std"] = data["scaler"]["std"][:5]
    save(data)
    with pytest.raises(ModelError, match="scaler.std has 5 values, the feature list has 14"):
        load_model(onnx, cfg)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_scaler_std_not_positive(copy, bad):
    onnx, cfg, data, save = copy
    data["scaler"]["std"][4] = bad
    save(data)
    with pytest.raises(ModelError, match="scaler.std must be positive and finite; bad for ret_300"):
        load_model(onnx, cfg)


def test_classes_do_not_match_the_output(copy):
    onnx, cfg, data, save = copy
    data["classes"] = [-1, 1]
    save(data)
    with pytest.raises(ModelError, match="output is 3 wide, the config lists 2 classes"):
        load_model(onnx, cfg)


def test_scaling_inside_the_graph_is_refused(copy):
    onnx, cfg, data, save = copy
    data["scaling"] = "inside"
    save(data)
    with pytest.raises(ModelError, match="expects \"outside\""):
        load_model(onnx, cfg)


def test_an_exempt_feature_is_refused(copy):
    onnx, cfg, data, save = copy
    data["feature_range"]["exempt"] = {"spread": "not gated"}
    save(data)
    with pytest.raises(ModelError, match="exempt .*spread.* is not allowed: every input must be range-gated"):
        load_model(onnx, cfg)


def test_export_refuses_when_onnx_and_the_network_disagree(monkeypatch):
    pytest.importorskip("onnx")
    from services.inference import export as ex
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(8, 14)), rng.normal(size=8)), (rng.normal(size=(3, 8)), rng.normal(size=3))]
    data, diff = ex.onnx_bytes(layers, 14, 3, "t")
    assert diff < 1e-5 and data[:2]
    monkeypatch.setattr(ex, "MAX_ABS_DIFF", 0.0)
    with pytest.raises(ex.ExportError, match="ONNX and the numpy network disagree"):
        ex.onnx_bytes(layers, 14, 3, "t")
