"""PAD int8 (or int16) over H and W, as TFLM's pad kernel without a constant tensor: the
border holds the zero point, i.e. real 0.0, and the input bytes are copied.

IR: attrs padding (top, left, bottom, right); pads with the input zero point.
PyTorch's zero padding of H and W (F.pad, nn.ZeroPad2d) and TFLite's PAD map to it
both ways.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinydsError
from ..ir import Graph, Op
from ..window import pad_nhwc
from .spec import OpSpec, TFLite


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


def from_aten(lo, a: dict, layer: str):
    """aten::constant_pad_nd / aten::pad with zeros on H and W, through the ATen lowering lo."""
    x = lo.expect_4d(lo.expect_act(a["self"], layer), layer, "pad")
    pad = [int(p) for p in a["pad"]] + [0] * 4
    if a.get("mode", "constant") != "constant" or (a.get("value") or 0) != 0 or any(pad[4:]) or min(pad) < 0:
        raise lo.fail(layer, f"padding {a['pad']} ({a.get('mode', 'constant')}, value {a.get('value')}) "
                             "is not supported; only non-negative zero padding of H and W is")
    left, right, top, bottom = pad[:4]
    n, c, h, w = x.shape
    return lo.emit("pad", layer, [x.name], (n, c, h + top + bottom, w + left + right),
                   {"padding": (top, left, bottom, right)})


def from_tflite(r, operator, where: str) -> Op:
    """A PAD operator (zero-point padding of H and W), through the .tflite reader r."""
    x = r.tensor(operator.inputs[0], where)
    p = r.const_ints(operator.inputs[1], where)
    if p.shape != (4, 2) or p[0].any() or p[3].any() or (p < 0).any():
        raise r.err(where, f"PAD {p.tolist()} pads more than height and width",
                    "only spatial zero-point padding of an NHWC tensor imports")
    y = r.tensor(operator.outputs[0], where)
    r.same_quant(x, y, where)
    r.check_output_shape(where, y, tuple(int(d) for d in r.g.tensors[x].shape + p.sum(axis=1)))
    return Op("pad", where, [x], [y],
              {"padding": (int(p[1, 0]), int(p[2, 0]), int(p[1, 1]), int(p[2, 1]))})


def to_tflite(w, g: Graph, op: Op) -> None:
    """The layer as a PAD operator with its paddings constant, through the writer w."""
    t, l, b, r = op.attrs["padding"]
    x = w.tensor(g.tensors[op.inputs[0]])
    w.op("pad", [x, w.const_i32(f"{op.name}/paddings", [[0, 0], [t, b], [l, r], [0, 0]])],
         w.outputs(g, op), w.options("PadOptionsT"), "PadOptions")


SPEC = OpSpec("pad", reference, c_params, macs, int16=True,
              float_reference=float_reference,
              aten={"constant_pad_nd": from_aten, "pad": from_aten},
              tflite=TFLite("PAD", 2, from_tflite, to_tflite, min_inputs=2),
              same_quant=True)
