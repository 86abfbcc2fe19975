"""PyTorch checkpoint -> ONNX model + JSON config, checked against PyTorch before anything is written.

    python -m services.inference.export --checkpoint models/scalper_v1.pt --out models/

The graph is built with onnx.helper straight from the Linear layers
(Gemm -> Relu -> ... -> Gemm -> Softmax), input "features" [batch, n_features]
float32 of *standardized* features, output "probs" [batch, n_classes]. Building it
by hand keeps the bytes deterministic (same weights, same file, same version hash)
and avoids torch.onnx, whose TorchScript path is deprecated and whose dynamo path
needs onnxscript. Scaling stays outside the graph (config "scaling": "outside").

Needs the `train` extra (torch, onnx). The live worker never imports this module.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

OPSET = 17
IR_VERSION = 8
MAX_ABS_DIFF = 1e-5


def build_onnx(layers: list[tuple[np.ndarray, np.ndarray]], n_features: int, n_classes: int, name: str):
    """layers: (weight [out, in], bias [out]) per Linear, ReLU between them, softmax at the end."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    cur = "features"
    for i, (w, b) in enumerate(layers):
        inits.append(numpy_helper.from_array(np.asarray(w, dtype=np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(np.asarray(b, dtype=np.float32), f"B{i}"))
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"B{i}"], [out], transB=1, name=f"linear{i}"))
        cur = out
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"], name=f"relu{i}"))
            cur = f"r{i}"
    nodes.append(helper.make_node("Softmax", [cur], ["probs"], axis=-1, name="softmax"))
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", n_classes])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="scalper.services.inference.export")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def linear_layers(state_dict: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) pairs in layer order from an nn.Sequential state dict."""
    keys = sorted({k.rsplit(".", 1)[0] for k in state_dict if k.endswith(".weight")},
                  key=lambda k: int(k.split(".")[-1]))
    return [(state_dict[f"{k}.weight"].detach().cpu().numpy(), state_dict[f"{k}.bias"].detach().cpu().numpy())
            for k in keys]


def export(checkpoint: Path, out_dir: Path, samples: np.ndarray | None = None) -> tuple[Path, Path, str]:
    """Write <name>.onnx and <name>_config.json; returns (onnx path, config path, version)."""
    import onnxruntime as ort
    import torch

    from services.inference.net import make_net

    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    names = list(ck["feature_names"])
    classes = list(ck["classes"])
    n, k = len(names), len(classes)
    net = make_net(n, list(ck["hidden"]), k)
    net.load_state_dict(ck["state_dict"])
    net.eval()
    model = build_onnx(linear_layers(ck["state_dict"]), n, k, ck["name"])
    data = model.SerializeToString()

    # ONNX must agree with PyTorch (softmax of the logits) before anything is written
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.5, size=(2000, n)).astype(np.float32)
    if samples is not None and len(samples):
        x = np.concatenate([x, np.asarray(samples, dtype=np.float32)])
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(["probs"], {"features": x})[0]
    got1 = np.concatenate([sess.run(["probs"], {"features": x[i:i + 1]})[0] for i in range(0, len(x), 97)])
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(x)), dim=-1).numpy()
    diff = max(float(np.abs(got - want).max()), float(np.abs(got1 - want[::97]).max()))
    if not diff < MAX_ABS_DIFF:
        raise SystemExit(f"export: ONNX and PyTorch disagree on {len(x)} inputs: max abs diff {diff:.3g} "
                         f">= {MAX_ABS_DIFF}; nothing written")

    import hashlib
    digest = hashlib.sha256(data).hexdigest()[:8]
    day = str(ck.get("trained_on") or datetime.now(timezone.utc).strftime("%Y%m%d"))
    version = f"{ck['name']}-{day}-{digest}"
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{ck['name']}.onnx"
    cfg_path = out_dir / f"{ck['name']}_config.json"
    cfg = {
        "version": version,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "input": {"name": "features", "shape": ["batch", n], "dtype": "float32"},
        "output": {"name": "probs", "shape": ["batch", k], "meaning": "softmax class probabilities"},
        "scaling": "outside",
        "scaling_note": "the worker feeds (raw - scaler.mean) / scaler.std; the graph holds no scaler",
        "feature_names": names,
        "scaler": {"mean": [float(v) for v in ck["mean"]], "std": [float(v) for v in ck["std"]],
                   "constant_in_training": list(ck.get("constant_features", []))},
        "classes": classes,
        "label": dict(ck["label"]),
        "thresholds": dict(ck.get("thresholds", {})),
        "feature_range": {"min": [float(v) for v in ck["feature_min"]],
                          "max": [float(v) for v in ck["feature_max"]],
                          "source": "min/max over the training split",
                          "exempt": dict(ck.get("range_exempt", {}))},
        "warmup_bars": int(ck.get("warmup_bars", 0)),
        "architecture": {"type": "mlp", "hidden": list(ck["hidden"]), "activation": "relu"},
        "training": dict(ck.get("training", {})),
        "metrics": dict(ck.get("metrics", {})),
        "export_check": {"samples": int(len(x)), "max_abs_diff_vs_torch": diff},
    }
    tmp = onnx_path.with_suffix(".onnx.tmp")
    tmp.write_bytes(data)
    tmp.replace(onnx_path)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return onnx_path, cfg_path, version


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"export: checkpoint {args.checkpoint} not found", file=sys.stderr)
        return 2
    onnx_path, cfg_path, version = export(args.checkpoint, args.out)
    print(f"export: wrote {onnx_path} and {cfg_path} ({version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
