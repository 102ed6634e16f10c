"""Each op's integer parameters, derived from tensor scales exactly as TFLM's Prepare does.

Both the PyTorch quantizer and the .tflite importer end here, so one function
decides multipliers, shifts and clamps; the reference and the code generator
only read the attrs this writes.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .errors import EXTREME_MODEL, TinydsError
from .ir import Graph
from .ops.activation import activation_range

MAX_SHIFT = 31                  # the C requantization shifts a uint32 left by at most this


def derive_int_params(g: Graph) -> Graph:
    """Fill op.attrs with each op's integer params (its module's derive, as TFLM's
    Prepare) and its fused activation's clamps; refuse a left shift the C cannot
    make (above 31). Returns g for chaining."""
    for op in g.ops:
        derive = ops.get(op.type).derive
        if derive is not None:
            derive(g, op)
        if "activation" in op.attrs:
            y = g.tensors[op.outputs[0]]
            op.attrs["act_min"], op.attrs["act_max"] = activation_range(
                op.attrs["activation"], *y.qparams, y.qrange)
        for key, v in op.attrs.items():
            if key.endswith("shift") and np.max(v) > MAX_SHIFT:
                raise TinydsError(f"layer {op.name}: requantization needs a left shift of "
                                  f"{int(np.max(v))} (> {MAX_SHIFT}): the output scale is tiny "
                                  f"next to the input's; {EXTREME_MODEL}")
    return g
