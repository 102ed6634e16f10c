"""MEAN int8 over any axes (global average pooling: H and W), as current TFLM's
reduce kernel (EvalIntegerMean -> QuantizedMeanOrSum): the int32 sum minus
zp_in * count, requantized by s_in / s_out with 1/count folded into the
multiplier, plus zp_out, clamped. Shapes are padded to 4-D on the left.

Current TFLM takes this path even when input and output share quantization
(older releases divided the raw sum with truncation there); the TFLite Micro
runtime in tests agrees with this module on both kinds of layers.

IR: attrs axes (any, of a tensor of at most 4-D), keepdims. (A PyTorch global
average over H, W arrives as avg_pool2d and the quantizer makes it MEAN.)
aten::mean and TFLite's MEAN (version 2) map to it both ways.
Its output gets its own calibrated quantization (as TFLite's converter does): a
global average has a narrower range than its input, and the rescaling path rounds
where a shared one would truncate.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, wrap_int32
from ..ir import Graph, Op
from .spec import OpSpec, TFLite


def folded_multiplier(s_in: float, s_out: float, count: int) -> tuple[int, int]:
    """Mirrors TFLM's PrepareMeanOrSum + the 1/count folding in QuantizedMeanOrSum.

    QuantizeMultiplier(s_in / s_out) in double, then shift the significand left
    by floor(log2(count)) (at most 32 and at most 31 + shift) and divide by count
    with integer truncation.
    """
    multiplier, shift = quantize_multiplier(s_in / s_out)
    bits = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << bits) // count, shift - bits


def params(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    rank = len(x.shape)
    dims = (1,) * (4 - rank) + tuple(int(d) for d in x.shape)
    axes = sorted({int(a) % rank + 4 - rank for a in op.attrs["axes"]} - {0}) \
        if -rank <= min(op.attrs["axes"]) and max(op.attrs["axes"]) < rank and rank <= 4 else None
    kept = [int(dims[d]) for d in range(1, 4) if d not in (axes or [])]
    if axes is None or int(np.prod(kept)) != y.size:
        raise TinydsError(f"{g.name}: {op.name}: mean over axes {tuple(op.attrs['axes'])} of a "
                          f"{rank}-D tensor {tuple(x.shape)} into {tuple(y.shape)} is not "
                          f"supported; reduce existing axes of a tensor of at most 4 dimensions")
    count = int(np.prod([dims[d] for d in axes]))
    (s_in, zp_in), (s_out, zp_out) = x.qparams, y.qparams
    multiplier, shift = folded_multiplier(s_in, s_out, count)
    strides = [int(np.prod(dims[d + 1:])) for d in range(1, 4)]
    loops = [dict(var="hwc"[d - 1], size=int(dims[d]), stride=strides[d - 1])
             for d in [d for d in range(1, 4) if d not in axes] + axes]
    return dict(axes=[a - 1 for a in axes], count=count, input_zp=zp_in, output_zp=zp_out,
                multiplier=multiplier, shift=shift, outer=loops[:3 - len(axes)],
                inner=loops[3 - len(axes):])


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    p = params(g, op)
    x4 = x.reshape((len(x),) + (1,) * (4 - len(g.tensors[op.inputs[0]].shape)) + x.shape[1:])
    total = x4.astype(np.int64).sum(axis=tuple(a + 1 for a in p["axes"]))
    shifted = wrap_int32(total - p["input_zp"] * p["count"])
    out = multiply_by_quantized_multiplier(shifted, p["multiplier"], p["shift"]) + p["output_zp"]
    out = np.clip(out, -128, 127).astype(np.int8)
    return out.reshape((x.shape[0], *g.tensors[op.outputs[0]].shape[1:]))


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    """One add per input element."""
    return g.tensors[op.inputs[0]].size


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return x.mean(axis=tuple(op.attrs["axes"]), keepdims=op.attrs.get("keepdims", True))


def from_aten(lo, a: dict, layer: str):
    """aten::mean(self, dim, keepdim), through the ATen lowering lo: over H and W (or L)
    a global average, over other dims a MEAN on the IR's axes."""
    x = lo.expect_act(a["self"], layer)
    dims = a.get("dim")
    dims = list(range(len(x.shape))) if dims is None else dims if isinstance(dims, (list, tuple)) else [dims]
    dims = sorted(d % len(x.shape) for d in dims)
    keepdim = a.get("keepdim", False)
    if len(x.shape) == 3 and dims == [2]:               # over L of (N, C, L)
        out = lo.global_avg(layer, lo.as4d(x))
        return lo.as3d(out) if keepdim else lo.reshape_to(layer + ".squeeze", out, (1, x.shape[1]))
    if len(x.shape) == 4 and dims == [2, 3]:
        out = lo.global_avg(layer, x)
        return out if keepdim else lo.reshape_to(layer + ".squeeze", out, (1, x.shape[1]))
    return _mean_any(lo, layer, x, [d for d in dims if d != 0], keepdim)


def _mean_any(lo, layer: str, x, dims, keepdim: bool):
    """TFLite MEAN over other dims: on the IR's axes, keeping dims; without keepdim only
    when at most one dim is left (whose element order NCHW and NHWC share)."""
    kept = [d for d in range(1, len(x.shape)) if d not in dims]
    if x.perm is not None or not dims or (not keepdim and len(kept) > 1):
        raise lo.fail(layer, f"mean over dims {dims} of shape {x.shape}"
                             f"{' (a flattened NCHW map)' if x.perm is not None else ''} is not "
                             "supported; use keepdim=True, or reduce all but one dim")
    x4 = lo.as4d(x)
    dims4 = [(0, 1, 3)[d] for d in dims] if len(x.shape) == 3 else dims
    axes = tuple(sorted((0, 3, 1, 2)[d] for d in dims4)) if len(x4.shape) == 4 else tuple(dims4)
    shape = tuple(1 if i in dims4 else n for i, n in enumerate(x4.shape))
    out = lo.emit("mean", layer, [x.name], shape, {"axes": axes, "keepdims": True})
    if not keepdim:
        return lo.reshape_to(layer + ".squeeze", out, (1, *[x.shape[d] for d in kept]))
    return lo.as3d(out) if len(x.shape) == 3 else out


def from_tflite(r, operator, where: str) -> Op:
    """A MEAN operator (constant axes), through the .tflite reader r."""
    x = r.tensor(operator.inputs[0], where)
    shape = r.g.tensors[x].shape
    raw = [int(a) for a in r.const_ints(operator.inputs[1], where).ravel()]
    if len(shape) > 4 or not raw or any(not -len(shape) <= a < len(shape) for a in raw):
        raise r.err(where, f"MEAN over axes {tuple(raw)} of shape {shape}",
                    "only axes of a tensor of at most 4 dimensions import")
    axes = tuple(sorted({a % len(shape) for a in raw}))
    keep = bool(operator.builtinOptions.keepDims)
    y = r.tensor(operator.outputs[0], where)
    r.check_output_shape(where, y, tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep
                         else tuple(d for i, d in enumerate(shape) if i not in axes))
    return Op("mean", where, [x], [y], {"axes": axes, "keepdims": keep})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a MEAN operator (axes as a constant operand), through the writer w."""
    x = w.tensor(g.tensors[op.inputs[0]])
    w.op("mean", [x, w.const_i32(f"{op.name}/axes", list(op.attrs["axes"]))], w.outputs(g, op),
         w.options("ReducerOptionsT", keepDims=bool(op.attrs.get("keepdims", False))),
         "ReducerOptions")


SPEC = OpSpec("mean", reference, c_params, macs,
              float_reference=float_reference, aten={"mean": from_aten},
              tflite=TFLite("MEAN", 2, from_tflite, to_tflite, options="ReducerOptions",
                            min_inputs=2))
