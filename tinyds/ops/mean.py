"""MEAN int8 over any axes (global average pooling: H and W), as current TFLM's
reduce kernel (EvalIntegerMean -> QuantizedMeanOrSum): the int32 sum minus
zp_in * count, requantized by s_in / s_out with 1/count folded into the
multiplier, plus zp_out, clamped. Shapes are padded to 4-D on the left.

Current TFLM takes this path even when input and output share quantization
(older releases divided the raw sum with truncation there); the TFLite Micro
runtime in tests agrees with this module on both kinds of layers.

IR: attrs axes (any, of a tensor of at most 4-D), keepdims. (A PyTorch global
average over H, W arrives as avg_pool2d and the quantizer makes it MEAN.)
Its output gets its own calibrated quantization (as TFLite's converter does): a
global average has a narrower range than its input, and the rescaling path rounds
where a shared one would truncate.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, wrap_int32
from ..ir import Graph, Op
from .spec import OpSpec


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


SPEC = OpSpec("mean", reference, c_params, macs,
              float_reference=float_reference)
