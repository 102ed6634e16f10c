"""ReLU6, float graph only: passes fold it into the producer's activation before
quantization, so it has no integer reference or kernel."""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from .activation import from_clamp, from_hardtanh, from_relu6
from .spec import OpSpec


def float_reference(g: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


SPEC = OpSpec("relu6", None, None, None, float_reference=float_reference,
              aten={"relu6": from_relu6, "hardtanh": from_hardtanh, "clamp": from_clamp})
