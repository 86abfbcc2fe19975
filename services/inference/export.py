"""Network layers -> ONNX model, checked against numpy before anything is written.

The graph is built with onnx.helper straight from the layers (Gemm -> Relu -> ... ->
Gemm -> Softmax), input "features" [batch, n_features] float32 of *standardized*
features, output "probs" [batch, n_classes]. Building it by hand keeps the bytes
deterministic (same weights, same file, same version hash). Scaling stays outside
the graph (config "scaling": "outside").

Needs the `train` extra (onnx). The live worker never imports this module.
"""
from __future__ import annotations

import numpy as np

OPSET = 17
IR_VERSION = 8
MAX_ABS_DIFF = 1e-5


class ExportError(RuntimeError):
    """ONNX Runtime and the trained network disagree: nothing is written."""


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


def onnx_bytes(layers, n_features: int, n_classes: int, name: str, samples: np.ndarray | None = None) -> tuple[bytes, float]:
    """(serialized model, max abs diff vs the numpy network on 2,000+ inputs, batch and single rows).
    Raises ExportError when they disagree by MAX_ABS_DIFF or more."""
    import onnxruntime as ort

    from services.inference.train import probs
    data = build_onnx(layers, n_features, n_classes, name).SerializeToString()
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.5, size=(2000, n_features)).astype(np.float32)
    if samples is not None and len(samples):
        x = np.concatenate([x, np.asarray(samples, dtype=np.float32)])
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(["probs"], {"features": x})[0]
    got1 = np.concatenate([sess.run(["probs"], {"features": x[i:i + 1]})[0] for i in range(0, len(x), 97)])
    f32 = [(np.asarray(w, dtype=np.float32).astype(np.float64), np.asarray(b, dtype=np.float32).astype(np.float64))
           for w, b in layers]
    want = probs(f32, x.astype(np.float64))
    diff = max(float(np.abs(got - want).max()), float(np.abs(got1 - want[::97]).max()))
    if not diff < MAX_ABS_DIFF:
        raise ExportError(f"export: ONNX and the numpy network disagree on {len(x)} inputs: max abs diff "
                          f"{diff:.3g} >= {MAX_ABS_DIFF}; nothing written")
    return data, diff
