"""BatchNorm (inference), float graph only: inputs x, mean, var, gamma, beta (constants,
one per channel); attrs eps. Passes fold it into the convolution before it, so it has
no integer reference or kernel."""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .spec import OpSpec


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    mean, var, gamma, beta = (g.tensors[n].data.astype(np.float64) for n in op.inputs[1:5])
    return (x - mean) / np.sqrt(var + op.attrs["eps"]) * gamma + beta


SPEC = OpSpec("batch_norm", None, None, None, float_reference=float_reference)
