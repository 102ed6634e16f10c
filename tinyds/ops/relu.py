"""ReLU, float graph only: passes fold it into the producer's activation (or a clamp)
before quantization, so it has no integer reference or kernel."""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .activation import from_clamp_min, from_relu
from .spec import OpSpec


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


SPEC = OpSpec("relu", None, None, None, float_reference=float_reference,
              aten={"relu": from_relu, "clamp_min": from_clamp_min})
