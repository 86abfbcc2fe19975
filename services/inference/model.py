"""Load the ONNX model and its JSON config, and refuse anything inconsistent, in one line.

The worker needs only onnxruntime and numpy here (no torch). Scaling happens
outside the graph: the config's scaler (mean, std) standardizes the raw features
into a pre-allocated float32 buffer, and the ONNX graph maps that buffer to class
probabilities (config "scaling": "outside").

Every failure raises ModelError whose text names the file and what is wrong:
missing or corrupt files, a config that is not JSON or lacks a key, an input width
that differs from the feature list, a scaler of the wrong length or with a
non-positive std, an output width that differs from the classes, or a version
whose hash does not match the ONNX file (model and config from different exports).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REQUIRED_KEYS = ("version", "feature_names", "scaler", "classes", "scaling", "label", "feature_range")


class ModelError(RuntimeError):
    """The model cannot be used; the message says which file and why."""


def file_hash8(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


@dataclass
class LoadedModel:
    session: object
    version: str
    feature_names: list[str]
    classes: list[int]
    mean: np.ndarray            # float64 [n]
    inv_std: np.ndarray         # float64 [n]
    range_lo: np.ndarray        # float64 [n]; -inf where the feature is not range-checked
    range_hi: np.ndarray        # float64 [n]; +inf likewise
    horizon_bars: int
    config: dict
    input_name: str = "features"
    output_name: str = "probs"
    _x: np.ndarray = field(init=False, repr=False)
    _binding: object = field(init=False, repr=False, default=None)
    _out: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.feature_names)
        self._x = np.zeros((1, n), dtype=np.float32)
        self._out = np.zeros((1, len(self.classes)), dtype=np.float32)
        try:  # io binding: input and output stay bound to our two buffers, no allocation per call
            import onnxruntime as ort
            b = self.session.io_binding()
            b.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(self._x))
            b.bind_ortvalue_output(self.output_name, ort.OrtValue.ortvalue_from_numpy(self._out))
            self._binding = b
        except Exception:
            self._binding = None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def scale_into_input(self, raw: np.ndarray) -> None:
        x = self._x[0]
        np.subtract(raw, self.mean, out=x, casting="same_kind")
        np.multiply(x, self.inv_std, out=x, casting="same_kind")

    def run(self) -> np.ndarray:
        """Score the bound input buffer; returns the class probabilities (a reused float32 array)."""
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)
            return self._out[0]
        return self.session.run([self.output_name], {self.input_name: self._x})[0][0]

    def predict(self, raw: np.ndarray) -> np.ndarray:
        self.scale_into_input(raw)
        return self.run()

    def out_of_range(self, raw: np.ndarray) -> list[str]:
        """Names of features outside the range seen in training (NaN counts as outside)."""
        bad = ~((raw >= self.range_lo) & (raw <= self.range_hi))
        if not bad.any():
            return []
        return [self.feature_names[i] for i in np.flatnonzero(bad)]


def _session(model_path: Path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])


def _floats(cfg_path: Path, key: str, values, n: int) -> np.ndarray:
    if not isinstance(values, list) or len(values) != n:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise ModelError(f"model config {cfg_path}: {key} has {got} values, the feature list has {n}")
    try:
        arr = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"model config {cfg_path}: {key} holds a non-number") from None
    return arr


def load_config(cfg_path: str | Path) -> dict:
    cfg_path = Path(cfg_path)
    if not cfg_path.is_file():
        raise ModelError(f"model config {cfg_path} not found")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"model config {cfg_path} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"model config {cfg_path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"model config {cfg_path}: top level must be an object")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ModelError(f"model config {cfg_path}: missing key(s) {', '.join(missing)}")
    return cfg


def load_model(model_path: str | Path, config_path: str | Path, expected_features: list[str] | None = None,
               warmup: bool = True) -> LoadedModel:
    """Load and cross-check model + config; `expected_features` (the code's feature list) must match
    the config's when given. Raises ModelError with one line."""
    model_path, cfg_path = Path(model_path), Path(config_path)
    cfg = load_config(cfg_path)
    names = cfg["feature_names"]
    if not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names):
        raise ModelError(f"model config {cfg_path}: feature_names must be a non-empty list of strings")
    n = len(names)
    if expected_features is not None and list(expected_features) != names:
        diff = next((f"position {i}: config {a!r}, code {b!r}" for i, (a, b) in
                     enumerate(zip(names, expected_features)) if a != b),
                    f"config has {n}, code has {len(expected_features)}")
        raise ModelError(f"model config {cfg_path}: feature list differs from the worker's ({diff})")
    if cfg["scaling"] != "outside":
        raise ModelError(f"model config {cfg_path}: scaling = {cfg['scaling']!r}; this worker scales outside "
                         "the graph and expects \"outside\"")
    sc = cfg["scaler"]
    if not isinstance(sc, dict):
        raise ModelError(f"model config {cfg_path}: scaler must be an object with mean and std")
    mean = _floats(cfg_path, "scaler.mean", sc.get("mean"), n)
    std = _floats(cfg_path, "scaler.std", sc.get("std"), n)
    bad = [names[i] for i in range(n) if not (math.isfinite(std[i]) and std[i] > 0)]
    if bad:
        raise ModelError(f"model config {cfg_path}: scaler.std must be positive and finite; bad for {', '.join(bad)}")
    if not np.all(np.isfinite(mean)):
        raise ModelError(f"model config {cfg_path}: scaler.mean holds a non-finite value")
    classes = cfg["classes"]
    if not isinstance(classes, list) or not classes or not all(c in (-1, 0, 1) for c in classes):
        raise ModelError(f"model config {cfg_path}: classes must be a list drawn from -1, 0, 1; got {classes!r}")
    fr = cfg["feature_range"]
    if not isinstance(fr, dict):
        raise ModelError(f"model config {cfg_path}: feature_range must be an object with min and max")
    lo = _floats(cfg_path, "feature_range.min", fr.get("min"), n)
    hi = _floats(cfg_path, "feature_range.max", fr.get("max"), n)
    if fr.get("exempt"):
        raise ModelError(f"model config {cfg_path}: feature_range.exempt ({', '.join(fr['exempt'])}) is not allowed: "
                         "every input must be range-gated; retrain without it")
    label = cfg["label"]
    horizon = label.get("horizon_bars") if isinstance(label, dict) else None
    if not isinstance(horizon, int) or horizon <= 0:
        raise ModelError(f"model config {cfg_path}: label.horizon_bars must be a positive integer")

    if not model_path.is_file():
        raise ModelError(f"model file {model_path} not found")
    version = str(cfg["version"])
    digest = file_hash8(model_path)
    if not version.endswith(digest):
        raise ModelError(f"model file {model_path} (sha256 {digest}) is not the one {cfg_path} describes "
                         f"(version {version}); re-export both together")
    try:
        session = _session(model_path)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {model_path} is not a loadable ONNX model: {first[:200]}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelError(f"model file {model_path}: expected 1 input and 1 output, found {len(inputs)} and {len(outputs)}")
    shape = inputs[0].shape
    width = shape[-1] if shape else None
    if width != n:
        raise ModelError(f"model file {model_path}: input {inputs[0].name!r} is {width} wide, "
                         f"the config lists {n} features")
    out_w = outputs[0].shape[-1] if outputs[0].shape else None
    if out_w != len(classes):
        raise ModelError(f"model file {model_path}: output is {out_w} wide, the config lists {len(classes)} classes")
    model = LoadedModel(session, version, names, classes, mean, 1.0 / std, lo, hi, horizon, cfg,
                        input_name=inputs[0].name, output_name=outputs[0].name)
    if warmup:
        try:
            p = model.predict(mean)
        except Exception as exc:
            raise ModelError(f"model file {model_path}: warm-up inference failed: {exc}") from None
        if not (np.all(np.isfinite(p)) and abs(float(p.sum()) - 1.0) < 1e-3):
            raise ModelError(f"model file {model_path}: warm-up output {p.tolist()} is not a probability vector")
    return model


OVERRIDE_KEY = "model.allow_unproven_model"


def edge_problem(model_cfg: dict) -> str | None:
    """Why this model has no measured edge (walk-forward EV after costs not positive), or None."""
    edge = model_cfg.get("edge") if isinstance(model_cfg.get("edge"), dict) else {}
    ev = edge.get("walk_forward_ev_ticks_per_trade")
    if edge.get("ev_positive") is True and isinstance(ev, (int, float)) and ev > 0:
        return None
    what = "no walk-forward evaluation" if not edge else f"walk-forward EV after costs {ev} ticks/trade"
    return f"model {model_cfg.get('version')} has no measured edge ({what})"


def live_gate(mode: str, model_cfg: dict, allow_unproven: bool) -> tuple[bool, str | None]:
    """(may start, message). Live mode refuses a model without a positive walk-forward EV unless
    the override key is set; the message names the key. Sim mode only warns."""
    problem = edge_problem(model_cfg)
    if problem is None:
        return True, None
    if mode == "live" and not allow_unproven:
        return False, f"{problem}; live trading refused. Set {OVERRIDE_KEY}: true to run it anyway"
    return True, f"{problem}{' (allowed by ' + OVERRIDE_KEY + ')' if mode == 'live' else ''}"
