"""Write a quantized IR graph as an int8 .tflite (or a 16x8 one: int16 activations, int8
weights, int64 biases), so TFLite Micro can run our quantization.

Built with the schema module's object API (ModelT ... Pack), never by hand. TFLM
re-derives every multiplier from the float32 scales we write, so TFLM agreeing
with our reference on this file proves requant.py computes what TFLM's Prepare
computes. Each op is written by its module (OpSpec.tflite), with the _Writer as the
argument.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from . import ops
from .errors import TinydsError
from .frontends.tflite import schema, tflite_padding
from .ir import Graph, Op, Tensor

ACTIVATION_CODES = {"none": 0, "relu": 1, "relu6": 3}
TENSOR_TYPES = {"float32": 0, "int32": 2, "uint8": 3, "int64": 4, "int16": 7, "int8": 9}


class _Writer:
    def __init__(self, g: Graph):
        self.S = schema()
        self.g = g
        self.buffers = [self.S.BufferT()]       # buffer 0: the empty sentinel
        self.tensors: list = []
        self.index: dict[str, int] = {}
        self.opcodes: dict[str, int] = {}
        self.codes: list = []
        self.operators: list = []

    def tensor(self, t: Tensor) -> int:
        if t.name in self.index:
            return self.index[t.name]
        q = None
        if t.scale is not None:
            q = self.S.QuantizationParametersT()
            q.scale = [float(s) for s in np.asarray(t.scale, np.float32)]
            q.zeroPoint = [int(z) for z in np.asarray(t.zero_point, np.int64)]
            q.quantizedDimension = int(t.axis or 0)
        self.index[t.name] = len(self.tensors)
        self.tensors.append(self._tensor_t(t.name, t.shape, t.dtype, t.data, q))
        return self.index[t.name]

    def _tensor_t(self, name, shape, dtype, data, quant):
        tt = self.S.TensorT()
        tt.name, tt.shape, tt.type = name, np.array(shape, np.int32), TENSOR_TYPES[dtype]
        tt.quantization = quant
        if data is not None:
            buf = self.S.BufferT()
            buf.data = np.ascontiguousarray(data, np.dtype(dtype)).view(np.uint8).ravel()
            tt.buffer = len(self.buffers)
            self.buffers.append(buf)
        return tt

    def const_i32(self, name: str, values) -> int:
        """An int32 constant operand (shapes, axes, paddings)."""
        arr = np.asarray(values, np.int32)
        self.index[name] = len(self.tensors)
        self.tensors.append(self._tensor_t(name, arr.shape, "int32", arr, None))
        return self.index[name]

    def outputs(self, g: Graph, op: Op) -> list[int]:
        """op's output operand; called after its inputs so tensors are numbered in data order."""
        return [self.tensor(g.tensors[op.outputs[0]])]

    def op(self, op_type: str, inputs: list[int], outputs: list[int], options=None, kind=None):
        """Append an operator of IR kind op_type (its builtin and version from OpSpec.tflite)."""
        tfl = ops.REGISTRY[op_type].tflite
        builtin, version = tfl.builtin, tfl.version
        if builtin not in self.opcodes:
            oc = self.S.OperatorCodeT()
            oc.builtinCode = getattr(self.S.BuiltinOperator, builtin)
            oc.deprecatedBuiltinCode = min(oc.builtinCode, 127)
            oc.version = version
            self.opcodes[builtin] = len(self.codes)
            self.codes.append(oc)
        o = self.S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[builtin], inputs, outputs
        if options is not None:
            o.builtinOptionsType = getattr(self.S.BuiltinOptions, kind)
            o.builtinOptions = options
        self.operators.append(o)

    def padding_code(self, op: Op, in_hw, kernel, stride, dilation) -> int | None:
        """0 (SAME) or 1 (VALID) if TFLite's rule reproduces op's explicit padding."""
        for code in (1, 0):
            if tflite_padding(code, in_hw, kernel, stride, dilation)[0] == tuple(op.attrs["padding"]):
                return code
        return None

    def activation(self, op: Op) -> int:
        """The ActivationFunctionType code of op's fused activation."""
        return ACTIVATION_CODES[op.attrs.get("activation", "none")]

    def options(self, cls: str, **fields):
        o = getattr(self.S, cls)()
        for k, v in fields.items():
            setattr(o, k, v)
        return o


def _emit(w: _Writer, g: Graph, op: Op) -> None:
    spec = ops.REGISTRY.get(op.type)
    if spec is not None and spec.tflite is not None:
        spec.tflite.write(w, g, op)
    else:
        raise TinydsError(f"{g.name}: {op.name}: op {op.type!r} has no int8 TFLite form; "
                          "run the quantizer's passes first")


def export_tflite(g: Graph) -> bytes:
    """The .tflite flatbuffer (bytes) of a quantized graph."""
    if not g.is_quantized:
        raise TinydsError(f"{g.name}: graph is not quantized; quantize it before export-tflite")
    import flatbuffers

    w = _Writer(g)
    for name in g.inputs:
        w.tensor(g.tensors[name])
    for op in g.ops:
        _emit(w, g, op)
    S = w.S
    sg = S.SubGraphT()
    sg.tensors, sg.operators, sg.name = w.tensors, w.operators, "main"
    sg.inputs = [w.index[n] for n in g.inputs]
    sg.outputs = [w.index[n] for n in g.outputs]
    m = S.ModelT()
    m.version, m.description = 3, "tinyds"
    m.operatorCodes, m.subgraphs, m.buffers = w.codes, [sg], w.buffers
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def write_tflite(g: Graph, path) -> Path:
    path = Path(path)
    path.write_bytes(export_tflite(g))
    return path


@contextlib.contextmanager
def _captured_stderr():
    """Collect what TFLM's C++ prints on fd 2 (allocation reports, failed-arena noise)."""
    with tempfile.TemporaryFile(mode="w+") as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        out: list[str] = []
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            out.append(f.read())


def tflm_arena_size(model: bytes, limit: int = 1 << 24) -> dict[str, int]:
    """Smallest TFLM arena that runs `model` (binary search), plus its head/tail split.

    `total` is what this host build of TFLM needs (64-bit pointers make its
    bookkeeping tail larger than on Cortex-M); `head` is the planned activation
    memory, the number comparable with tinyds's arena.
    """
    from tflite_micro.python.tflite_micro import runtime

    def runs(size: int) -> bool:
        try:
            _invoke_zeros(runtime.Interpreter.from_bytes(model, arena_size=size))
            return True
        except (RuntimeError, ValueError):
            return False

    with _captured_stderr():
        if not runs(limit):
            raise TinydsError(f"TFLM cannot run the model within {limit} bytes of arena")
        lo, hi = 0, limit
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if runs(mid) else (mid, hi)
    with _captured_stderr() as report:
        runs(hi)
        it = runtime.Interpreter.from_bytes(model, arena_size=hi)
        _invoke_zeros(it)
        it.print_allocations()
    sizes = {"total": hi}
    for line in report[0].splitlines():
        for key in ("head", "tail"):
            if f"allocation {key}" in line:
                sizes[key] = int(line.split()[-2])
    return sizes


def _invoke_zeros(it) -> None:
    """One TFLM run with every input zero."""
    i = 0
    while True:
        try:
            d = it.get_input_details(i)
        except (RuntimeError, ValueError, IndexError):
            break
        it.set_input(np.zeros(d["shape"], d["dtype"]), i)
        i += 1
    it.invoke()
