"""The one graph IR every stage reads and writes.

A `Graph` is a list of `Op`s in execution order over named `Tensor`s. Layout is
NHWC with a static batch of 1 (activations are (1, H, W, C) or (1, N)).
The same classes hold the float graph (frontends, passes, calibration) and the
quantized graph (reference interpreter, code generation, .tflite import/export).

Weight layouts follow TFLite so .tflite import/export is a straight copy. Op kinds
and their attrs (the float graph's; quantization adds the integer params) are
documented by each op's module, tinyds/ops/<kind>.py; the registry there
(tinyds.ops.REGISTRY) is the list of kinds. The float-only ones (batch_norm, relu,
relu6) are removed by passes before quantization.

Activations are int8 (TFLite's default scheme) or int16 (its 16x8 scheme: symmetric,
zero point 0, int8 weights, int64 biases); one graph uses one activation dtype.

Quantization lives on tensors: `scale` (float32 array) and `zero_point`
(int64 array), length 1 for per-tensor, else one per channel along `axis`.
Shifts follow TFLite's sign convention: positive = left shift.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTIVATIONS = ("none", "relu", "relu6")
ACT_DTYPES = ("int8", "int16")       # quantized activation tensors (--activations)
# C element type of each integer activation dtype (uint8 only at a model's edges).
C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t"}


# No microcontroller holds a tensor of more elements; shapes are checked against this
# before anything of that size is allocated.
MAX_ELEMENTS = 1 << 24


def too_large(shape) -> bool:
    """Whether a shape has more elements than any MCU model tensor can."""
    n = 1
    for d in shape:
        n *= int(d)
    return n > MAX_ELEMENTS


@dataclass
class Tensor:
    name: str
    shape: tuple
    dtype: str = "float32"   # "float32" | "int8" | "int16" | "int32" | "int64" | "uint8" (edges only)
    data: np.ndarray | None = None  # constants (weights, bias) only
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int | None = None         # quantized dimension for per-channel params

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def qrange(self) -> tuple[int, int]:
        """The integer range of the tensor's dtype: (-128, 127) or (-32768, 32767)."""
        info = np.iinfo(self.dtype)
        return int(info.min), int(info.max)

    @property
    def qparams(self) -> tuple[float, int]:
        """Per-tensor (scale, zero_point) of an activation tensor."""
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass
class Op:
    type: str
    name: str                 # the source layer's name, used in errors and C comments
    inputs: list[str]         # tensor names; an absent optional input (bias) is ""
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class Graph:
    name: str
    tensors: dict[str, Tensor]
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    source_layout: str = "NHWC"     # the user's input layout: "NCHW" for PyTorch models

    def tensor(self, name: str) -> Tensor | None:
        return self.tensors[name] if name else None

    def producer(self, tensor_name: str) -> Op | None:
        for op in self.ops:
            if tensor_name in op.outputs:
                return op
        return None

    def consumers(self, tensor_name: str) -> list[Op]:
        return [op for op in self.ops if tensor_name in op.inputs]

    def add_tensor(self, t: Tensor) -> Tensor:
        if t.name in self.tensors:
            raise ValueError(f"duplicate tensor name {t.name!r}")
        self.tensors[t.name] = t
        return t

    def remove_unused_tensors(self) -> None:
        used = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            used.update(n for n in op.inputs + op.outputs if n)
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}

    @property
    def is_quantized(self) -> bool:
        return self.tensors[self.inputs[0]].dtype != "float32"

    @property
    def input(self) -> Tensor:
        return self.tensors[self.inputs[0]]

    @property
    def output(self) -> Tensor:
        return self.tensors[self.outputs[0]]
