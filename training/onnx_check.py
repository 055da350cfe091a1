"""Check an exported ONNX file: the ONNX checker, the I/O contract, and its output.

onnxruntime is not packaged for Debian and onnx 1.12 has no reference evaluator
(``onnx.reference`` arrived in onnx 1.13), so the output check uses the small numpy
interpreter below. It implements only the ops our exports use (Conv, Relu, MaxPool,
AveragePool, Flatten, Reshape, Gemm, MatMul, Mul, Add, Sub, Div, Pow, Identity,
Constant, BatchNormalization) and refuses anything else, so an export that grows a
new op fails loudly here instead of silently passing.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import onnx
from onnx import numpy_helper


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pad_nchw(x, pads, value=0.0):
    n = len(pads) // 2
    if not any(pads):
        return x
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + n]) for i in range(n)]
    return np.pad(x, widths, constant_values=value)


def _windows(x, kh, kw, sh, sw):
    """[N,C,H,W] -> [N,C,OH,OW,kh,kw] view of the sliding windows."""
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3]))


def _conv(x, w, b, a):
    if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise NotImplementedError("Conv with groups or dilations")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("Conv auto_pad")
    kh, kw = w.shape[2:]
    sh, sw = a.get("strides", [1, 1])
    x = _pad_nchw(x, a.get("pads", [0, 0, 0, 0]))
    win = _windows(np.ascontiguousarray(x), kh, kw, sh, sw)      # N,C,OH,OW,kh,kw
    y = np.einsum("ncijkl,ockl->noij", win, w, optimize=True)
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def _pool(x, a, kind):
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    if a.get("ceil_mode", 0):
        raise NotImplementedError("pooling with ceil_mode")
    pads = a.get("pads", [0, 0, 0, 0])
    if kind == "max":
        win = _windows(np.ascontiguousarray(_pad_nchw(x, pads, -np.inf)), kh, kw, sh, sw)
        return win.max(axis=(4, 5))
    if any(pads) and not a.get("count_include_pad", 0):
        raise NotImplementedError("padded AveragePool without count_include_pad")
    win = _windows(np.ascontiguousarray(_pad_nchw(x, pads)), kh, kw, sh, sw)
    return win.mean(axis=(4, 5))


def run(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    """Evaluate ``model`` on ``feeds`` in float64; returns the graph outputs in order."""
    env: Dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i).astype(np.float64)
                                  if numpy_helper.to_array(i).dtype.kind == "f"
                                  else numpy_helper.to_array(i)
                                  for i in model.graph.initializer}
    env.update({k: np.asarray(v, dtype=np.float64) for k, v in feeds.items()})
    for node in model.graph.node:
        a = _attrs(node)
        ins = [env[n] if n else None for n in node.input]
        op = node.op_type
        if op == "Conv":
            out = _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a)
        elif op == "Relu":
            out = np.maximum(ins[0], 0)
        elif op == "MaxPool":
            out = _pool(ins[0], a, "max")
        elif op == "AveragePool":
            out = _pool(ins[0], a, "avg")
        elif op == "Flatten":
            ax = a.get("axis", 1)
            out = ins[0].reshape(int(np.prod(ins[0].shape[:ax])), -1)
        elif op == "Reshape":
            shape = [int(s) for s in ins[1]]
            shape = [ins[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            out = ins[0].reshape(shape)
        elif op == "Gemm":
            A, B = ins[0], ins[1]
            if a.get("transA", 0):
                A = A.T
            if a.get("transB", 0):
                B = B.T
            out = a.get("alpha", 1.0) * (A @ B)
            if len(ins) > 2 and ins[2] is not None:
                out = out + a.get("beta", 1.0) * ins[2]
        elif op == "MatMul":
            out = ins[0] @ ins[1]
        elif op == "Mul":
            out = ins[0] * ins[1]
        elif op == "Add":
            out = ins[0] + ins[1]
        elif op == "Sub":
            out = ins[0] - ins[1]
        elif op == "Div":
            out = ins[0] / ins[1]
        elif op == "Pow":
            out = np.power(ins[0], ins[1])
        elif op == "Identity":
            out = ins[0]
        elif op == "Constant":
            out = numpy_helper.to_array(a["value"])
            if out.dtype.kind == "f":
                out = out.astype(np.float64)
        elif op == "BatchNormalization":
            x, g, b, m, v = ins[:5]
            sh = (1, -1) + (1,) * (x.ndim - 2)
            out = (x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + a.get("epsilon", 1e-5)) \
                * g.reshape(sh) + b.reshape(sh)
        else:
            raise NotImplementedError(f"node {node.name!r}: op {op} is not supported by "
                                      f"the numpy checker (training/onnx_check.py)")
        env[node.output[0]] = out
    return [env[o.name] for o in model.graph.output]


def check_contract(model: onnx.ModelProto, input_dims=(1, 28, 28)) -> dict:
    """Checker + the export contract: input `input` [N, *input_dims] (MNIST: [N,1,28,28]),
    output `logits` [N,10]."""
    onnx.checker.check_model(model)
    g = model.graph
    init = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in init]
    if [i.name for i in inputs] != ["input"] or [o.name for o in g.output] != ["logits"]:
        raise ValueError(f"expected input 'input' and output 'logits', found "
                         f"{[i.name for i in inputs]} -> {[o.name for o in g.output]}")

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    din, dout = dims(inputs[0]), dims(g.output[0])
    want = [int(d) for d in input_dims]
    if din[1:] != want or not isinstance(din[0], str):
        raise ValueError(f"input shape {din}, expected [N,{','.join(map(str, want))}] with a "
                         f"dynamic N")
    if dout[1:] != [10] or not isinstance(dout[0], str):
        raise ValueError(f"output shape {dout}, expected [N,10] with a dynamic N")
    ops = sorted({n.op_type for n in g.node})
    for bad in ("Dropout", "Softmax", "LogSoftmax"):
        if bad in ops:
            raise ValueError(f"the export contains {bad}; it must not")
    return {"checker": "ok", "opset": model.opset_import[0].version, "ops": ops,
            "input": ["N", *want], "output": ["N", 10]}


def compare(model: onnx.ModelProto, x: np.ndarray, expected: np.ndarray) -> dict:
    """Run the numpy interpreter on x and compare with the framework's logits."""
    (got,) = run(model, {"input": x})
    diff = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    return {"evaluator": "numpy interpreter (training/onnx_check.py; onnx 1.12 has no "
                         "onnx.reference and onnxruntime is not in Debian)",
            "images": int(x.shape[0]), "maxAbsDiff": diff, "maxAbsLogit": scale,
            "argmaxAgree": int((got.argmax(1) == expected.argmax(1)).sum())}
