"""PAD int8 (or int16) over H and W, as TFLM's pad kernel without a constant tensor: the
border holds the zero point, i.e. real 0.0, and the input bytes are copied.

IR: attrs padding (top, left, bottom, right); pads with the input zero point.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..ir import Graph, Op
from ..window import pad_nhwc
from .spec import OpSpec


def params(g: Graph, op: Op) -> dict:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if x.qparams != y.qparams:
        raise TinydsError(f"{g.name}: {op.name}: pad input {x.qparams} and output {y.qparams} "
                          f"(scale, zero point) differ; pad copies bytes, quantize both alike")
    _, ih, iw, c = x.shape
    top, left, bottom, right = (int(v) for v in op.attrs["padding"])
    if min(top, left, bottom, right) < 0:
        raise TinydsError(f"{g.name}: {op.name}: negative padding {op.attrs['padding']}; "
                          f"crop with a slice before converting")
    return dict(in_h=ih, in_w=iw, channels=c, out_h=ih + top + bottom, out_w=iw + left + right,
                pad_top=top, pad_left=left, pad_value=x.qparams[1], ctype=f"{x.dtype}_t")


def reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    p = params(g, op)
    return pad_nhwc(x, op.attrs["padding"], p["pad_value"]).astype(x.dtype)


def c_params(g: Graph, op: Op) -> dict:
    return params(g, op)


def macs(g: Graph, op: Op) -> int:
    return 0


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    top, left, bottom, right = op.attrs["padding"]
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


SPEC = OpSpec("pad", reference, c_params, macs, int16=True,
              float_reference=float_reference)
