"""Float NumPy interpreter of the float IR (NHWC, batched).

Used for calibration (it returns every tensor, which the observers need) and
as the float side of the float-vs-int8 agreement report; tests check it
against PyTorch so frontend lowering errors surface here first.
"""
from __future__ import annotations

import numpy as np

from .ir import Graph, Op
from .window import in_bounds_count, taps

_CLAMPS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


def _act(y: np.ndarray, op: Op) -> np.ndarray:
    lo, hi = _CLAMPS[op.attrs.get("activation", "none")]
    return np.clip(y, lo, hi) if op.attrs.get("activation", "none") != "none" else y


def _const(g: Graph, name: str):
    return g.tensors[name].data.astype(np.float64) if name else None


def _conv2d(g, op, x):
    w, b = _const(g, op.inputs[1]), _const(g, op.inputs[2] if len(op.inputs) > 2 else "")
    out = 0.0
    for i, j, v in taps(x, w.shape[1:3], op.attrs["stride"], op.attrs["dilation"], op.attrs["padding"]):
        out = out + v @ w[:, i, j, :].T
    return _act(out + (b if b is not None else 0.0), op)


def _depthwise_conv2d(g, op, x):
    w, b = _const(g, op.inputs[1]), _const(g, op.inputs[2] if len(op.inputs) > 2 else "")
    m = op.attrs["depth_multiplier"]
    out = 0.0
    for i, j, v in taps(x, w.shape[1:3], op.attrs["stride"], op.attrs["dilation"], op.attrs["padding"]):
        out = out + np.repeat(v, m, axis=-1) * w[0, i, j, :]
    return _act(out + (b if b is not None else 0.0), op)


def _fully_connected(g, op, x):
    w, b = _const(g, op.inputs[1]), _const(g, op.inputs[2] if len(op.inputs) > 2 else "")
    out = x.reshape(x.shape[0], -1) @ w.T
    return _act(out + (b if b is not None else 0.0), op)


def _max_pool2d(g, op, x):
    out = None
    for _, _, v in taps(x, op.attrs["kernel"], op.attrs["stride"], (1, 1), op.attrs["padding"], -np.inf):
        out = v if out is None else np.maximum(out, v)
    return _act(out, op)


def _avg_pool2d(g, op, x):
    out = 0.0
    for _, _, v in taps(x, op.attrs["kernel"], op.attrs["stride"], (1, 1), op.attrs["padding"], 0.0):
        out = out + v
    return _act(out / in_bounds_count(x.shape[1:3], op.attrs["kernel"], op.attrs["stride"], op.attrs["padding"]), op)


def _mean(g, op, x):
    return x.mean(axis=tuple(op.attrs["axes"]), keepdims=op.attrs.get("keepdims", True))


def _operands(g, op, args):
    """add/sub/mul inputs, constants included, shaped to broadcast over the batch."""
    it = iter(args)
    return [g.tensors[n].data.astype(np.float64)[None] if g.tensors[n].is_const else next(it)
            for n in op.inputs[:2]]


def _add(g, op, *args):
    a, b = _operands(g, op, args)
    return _act(a + b, op)


def _sub(g, op, *args):
    a, b = _operands(g, op, args)
    return _act(a - b, op)


def _prelu(g, op, *args):
    x, alpha = _operands(g, op, args)
    return np.where(x >= 0, x, x * alpha)


def _mul(g, op, *args):
    a, b = _operands(g, op, args)
    return _act(a * b, op)


def _reshape(g, op, x):
    return x.reshape((x.shape[0],) + tuple(op.attrs["shape"][1:]))


def _pad(g, op, x):
    top, left, bottom, right = op.attrs["padding"]
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _softmax(g, op, x):
    z = (x - x.max(axis=-1, keepdims=True)) * op.attrs.get("beta", 1.0)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _leaky_relu(g, op, x):
    return np.where(x > 0, x, x * op.attrs["alpha"])


def _hard_swish(g, op, x):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _logistic(g, op, x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))     # 1 / (1 + exp(-x)) without overflow


def _concatenation(g, op, *xs):
    return np.concatenate(xs, axis=op.attrs["axis"])


def _transpose(g, op, x):
    return np.transpose(x, op.attrs["perm"])


def _quantize(g, op, x):
    return x                                      # a change of scale: the same real values


def _batch_norm(g, op, x):
    mean, var, gamma, beta = (_const(g, n) for n in op.inputs[1:5])
    return (x - mean) / np.sqrt(var + op.attrs["eps"]) * gamma + beta


def _relu(g, op, x):
    return np.maximum(x, 0.0)


def _relu6(g, op, x):
    return np.clip(x, 0.0, 6.0)


KERNELS = {
    "conv2d": _conv2d, "depthwise_conv2d": _depthwise_conv2d, "fully_connected": _fully_connected,
    "max_pool2d": _max_pool2d, "avg_pool2d": _avg_pool2d, "mean": _mean, "add": _add, "sub": _sub, "mul": _mul, "prelu": _prelu,
    "reshape": _reshape, "pad": _pad, "softmax": _softmax, "batch_norm": _batch_norm,
    "relu": _relu, "relu6": _relu6, "leaky_relu": _leaky_relu, "hard_swish": _hard_swish,
    "logistic": _logistic, "concatenation": _concatenation, "transpose": _transpose, "quantize": _quantize,
}


def run(g: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run a batch x (N, *input_shape[1:]) float (several inputs: a list of batches);
    returns every activation tensor by name."""
    from .reference import batches
    values = {n: np.asarray(b, dtype=np.float64) for n, b in zip(g.inputs, batches(g, x))}
    for op in g.ops:
        args = [values[n] for n in op.inputs if n and not g.tensors[n].is_const]
        values[op.outputs[0]] = KERNELS[op.type](g, op, *args)
    return values
