"""Import a fully-int8 .tflite flatbuffer into the quantized IR.

The flatbuffer is read with the generated schema module that ships in
tflite-micro / ai-edge-litert (never hand-parsed). Quantization parameters are
kept exactly (float32 scales, int zero points) and the integer params are then
derived by requant.derive_int_params, the same path the PyTorch quantizer takes,
so an imported model and TFLM's Prepare see identical inputs. Float QUANTIZE /
DEQUANTIZE at the graph edges are dropped: the firmware's interface is int8, or
uint8 where the model was converted with a uint8 input or output (a QUANTIZE
between it and the int8 layers, kept and run as TFLM runs it).
Each operator is read by its op module (OpSpec.tflite), with the _Reader as the
argument.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from .. import ops, requant
from ..errors import TinydsError
from ..ir import ACT_DTYPES, MAX_ELEMENTS, Graph, Op, Tensor, too_large

ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}    # TFLite ActivationFunctionType
TYPES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}  # we accept
MAX_RANK = 6
INT8_RANGE = (-128, 127)
# Each op module's builtin (OpSpec.tflite), with the options table it must carry (None:
# it needs none) and how many inputs it must have; DEQUANTIZE is read at the graph edges.
BUILTINS = {spec.tflite.builtin: spec for spec in ops.REGISTRY.values() if spec.tflite}
OPTIONS = {"DEQUANTIZE": None, **{b: spec.tflite.options for b, spec in BUILTINS.items()}}
MIN_INPUTS = {b: spec.tflite.min_inputs for b, spec in BUILTINS.items()}
SUPPORTED = tuple(BUILTINS) + ("DEQUANTIZE",)


def schema():
    """The flatbuffer schema module (the interop extra `tinyds[tflite]`)."""
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated
    except ImportError:
        try:
            from ai_edge_litert import schema_py_generated
        except ImportError:
            raise TinydsError("reading .tflite needs the TFLite schema module; "
                              "pip install 'tinyds[tflite]'") from None
    return schema_py_generated


def tflite_padding(padding: int, in_hw, kernel, stride, dilation):
    """TFLite ComputePaddingHeightWidth: ((top, left, bottom, right), (out_h, out_w)).

    SAME puts the odd pixel at the bottom/right; VALID pads nothing.
    """
    pads, out = [], []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        eff = (k - 1) * d + 1
        o = (size + s - 1) // s if padding == 0 else (size + s - eff) // s
        total = max((o - 1) * s + eff - size, 0)
        pads.append((total // 2, total - total // 2))
        out.append(o)
    return (pads[0][0], pads[1][0], pads[0][1], pads[1][1]), tuple(out)


class _Reader:
    """State of one import: the flatbuffer object tree and the Graph being built."""

    def __init__(self, path: Path):
        self.path = path
        self.S = schema()
        try:
            buf = path.read_bytes()
            if len(buf) < 8 or not self.S.Model.ModelBufferHasIdentifier(buf, 0):
                raise ValueError("no TFL3 file identifier")
            self.model = self.S.ModelT.InitFromObj(self.S.Model.GetRootAsModel(buf, 0))
        except (OSError, ValueError, IndexError, TypeError, AttributeError, struct.error,
                RecursionError) as e:
            raise TinydsError(f"{path}: not a readable .tflite flatbuffer ({str(e)[:120]}); the "
                              "file is truncated or damaged: pass a model written by the TFLite "
                              "converter") from None
        self.buf = buf
        if len(self.model.subgraphs or []) != 1:
            raise TinydsError(f"{path}: {len(self.model.subgraphs or [])} subgraphs; "
                              "only single-subgraph models are supported")
        self.sg = self.model.subgraphs[0]
        self.opnames = {v: k for k, v in vars(self.S.BuiltinOperator).items()
                        if not k.startswith("_")}
        self.names = self._tensor_names()
        self.g = Graph(path.stem, {}, [], [], [])
        for i in range(len(self.sg.tensors or [])):
            self._check_tensor(i)

    def _tensor_names(self) -> list[str]:
        """The TFLite tensor names, made unique (names are how tests map tensors back)."""
        names, seen = [], set()
        for i, t in enumerate(self.sg.tensors or []):
            try:
                n = t.name.decode() if isinstance(t.name, bytes) else (t.name or "")
            except UnicodeDecodeError:
                raise self.err(f"tensor {i}", "its name is not UTF-8",
                               "the file is damaged; re-convert the model") from None
            if not n or n in seen:
                n = f"tensor_{i}"
            seen.add(n)
            names.append(n)
        return names

    def err(self, where: str, problem: str, fix: str) -> TinydsError:
        return TinydsError(f"{self.path}: {where}: {problem}; {fix}")

    def check_output_shape(self, where: str, y: str, want) -> None:
        """Refuse an output tensor y whose shape is not the one the operator computes."""
        if tuple(self.g.tensors[y].shape) != tuple(want):
            raise self.err(where, f"output {y!r} has shape {self.g.tensors[y].shape}, the "
                           f"operator computes {tuple(want)}", "the file is damaged; re-convert "
                           "the model")

    def padding(self, code: int, in_hw, kernel, stride, dilation):
        """tflite_padding: ((top, left, bottom, right), (out_h, out_w)) of SAME/VALID."""
        return tflite_padding(code, in_hw, kernel, stride, dilation)

    def check_window_output(self, where: str, x_shape, y_shape, out_hw, channels: int) -> None:
        """The output shape is what TFLite computes from the input, strides, kernel and padding."""
        want = (x_shape[0], *out_hw, channels)
        if tuple(y_shape) != want:
            raise self.err(where, f"output shape {tuple(y_shape)} does not match {want}, the shape "
                           "TFLite's padding rule gives", "re-convert the model")

    def same_quant(self, x: str, y: str, where: str) -> None:
        """Refuse an output whose scale and zero point are not its input's."""
        a, b = self.g.tensors[x], self.g.tensors[y]
        if a.qparams != b.qparams:
            raise self.err(where, f"input and output quantization differ ({a.qparams} vs "
                           f"{b.qparams})", "TFLite requires the same scale and zero point here; "
                           "re-convert the model")

    def const_ints(self, idx: int, where: str) -> np.ndarray:
        """Constant tensor idx (a shape, axes, paddings) as int64."""
        d = self.data(idx)
        if d is None:
            raise self.err(where, f"tensor {self.names[idx]!r} must be a constant",
                           "only static shapes, axes and paddings are supported")
        return d.astype(np.int64)

    def _check_tensor(self, idx: int) -> None:
        """Shape, buffer and quantization of tensor idx are in range, before any of it is used."""
        t, name = self.sg.tensors[idx], self.names[idx]
        where, fix = f"tensor {name!r}", "the file is damaged; re-convert the model"
        shape = list(self.shape(idx))
        if len(shape) > MAX_RANK or min(shape, default=1) < 1:
            raise self.err(where, f"shape {shape} has a dimension below 1 or too many", fix)
        if too_large(shape):
            raise self.err(where, f"shape {shape} has more than {MAX_ELEMENTS} elements",
                           "a microcontroller model is far smaller; re-convert the model")
        if not 0 <= t.buffer < len(self.model.buffers or []):
            raise self.err(where, f"buffer index {t.buffer} is out of range", fix)
        raw = self._raw(idx)
        if raw is not None and t.type in TYPES:
            dtype = self._dtype(idx, where)
            if raw.size != math.prod(shape) * np.dtype(dtype).itemsize:
                raise self.err(where, f"buffer holds {raw.size} bytes, shape {shape} of {dtype} "
                               f"needs {math.prod(shape) * np.dtype(dtype).itemsize}", fix)
        q = t.quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return
        scale = np.asarray(q.scale, np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [], np.int64)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            bad = str(scale[~(np.isfinite(scale) & (scale > 0))][0])
            raise self.err(where, f"quantization scale {bad} is not finite and positive", fix)
        if len(zp) != len(scale):
            raise self.err(where, f"{len(scale)} scales but {len(zp)} zero points", fix)
        lo, hi = {"int8": INT8_RANGE, "uint8": (0, 255), "int32": (0, 0), "int16": (0, 0),
                  "int64": (0, 0)}.get(TYPES.get(t.type), (-math.inf, math.inf))
        if zp.size and (zp.min() < lo or zp.max() > hi):
            raise self.err(where, f"zero point {int(zp[(zp < lo) | (zp > hi)][0])} is outside "
                           f"[{lo}, {hi}]", "int8 zero points lie in [-128, 127], uint8 ones in "
                           "[0, 255]; int16 activations (16x8) and biases have zero point 0")
        if len(scale) > 1 and not 0 <= q.quantizedDimension < len(shape):
            raise self.err(where, f"quantized dimension {q.quantizedDimension} is out of range",
                           fix)

    def _raw(self, idx: int) -> np.ndarray | None:
        """Tensor idx's constant bytes, or None for an activation."""
        b = self.model.buffers[self.sg.tensors[idx].buffer]
        if getattr(b, "offset", 0) > 1:        # large models keep buffers after the flatbuffer
            if b.offset + b.size > len(self.buf):
                raise self.err(f"tensor {self.names[idx]!r}", f"buffer at {b.offset} (+{b.size}) "
                               "lies beyond the end of the file", "the file is truncated")
            return np.frombuffer(self.buf, np.uint8, b.size, b.offset)
        if b.data is not None and len(b.data):
            return np.asarray(b.data, np.uint8)
        return None

    def data(self, idx: int) -> np.ndarray | None:
        raw = self._raw(idx)
        if raw is None:
            return None
        dtype = np.dtype(self._dtype(idx, ""))
        return raw.view(dtype).reshape(self.shape(idx)).copy()

    def _dtype(self, idx: int, where: str) -> str:
        t = self.sg.tensors[idx]
        if t.type not in TYPES:
            kind = {v: k for k, v in vars(self.S.TensorType).items() if not k.startswith("_")}
            raise self.err(where, f"tensor {self.names[idx]!r} has type "
                           f"{kind.get(t.type, t.type)}", "only int8 models (int32 bias) and 16x8 "
                           "models (int16 activations, int64 bias) import")
        return TYPES[t.type]

    def tensor(self, idx: int, where: str) -> str:
        """Add TFLite tensor idx to the Graph (once); returns its IR name."""
        name = self.names[idx]
        if name in self.g.tensors:
            return name
        t = self.sg.tensors[idx]
        dtype = self._dtype(idx, where)
        q = t.quantization
        if dtype == "float32" or q is None or q.scale is None or len(q.scale) == 0:
            raise self.err(where, f"tensor {name!r} is not quantized",
                           "convert with full-integer quantization (int8 inputs and outputs)")
        scale = np.asarray(q.scale, np.float32)
        zp = np.asarray(q.zeroPoint, np.int64)
        data = self.data(idx)
        if data is None and len(scale) != 1:
            raise self.err(where, f"activation {name!r} has per-channel quantization",
                           "activations must be quantized per tensor")
        self.g.add_tensor(Tensor(name, self.shape(idx), dtype, data=data,
                                 scale=scale, zero_point=zp,
                                 axis=int(q.quantizedDimension) if data is not None else None))
        return name

    def check_op(self, i: int, op, available: set[int]) -> tuple[str, str]:
        """(opname, layer name) of operator i once its indices, options and order are valid;
        available holds the tensors computed so far (graph inputs and constants count)."""
        codes = self.model.operatorCodes or []
        if not 0 <= op.opcodeIndex < len(codes):
            raise self.err(f"operator {i}", f"opcode index {op.opcodeIndex} is out of range",
                           "the file is damaged; re-convert the model")
        oc = codes[op.opcodeIndex]
        opname = self.opnames.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "CUSTOM")
        where = f"{opname.lower()}_{i}"
        if opname not in SUPPORTED:
            name = oc.customCode.decode(errors="replace") if opname == "CUSTOM" and oc.customCode \
                else opname
            raise self.err(where, f"operator {name} is not supported",
                           f"tinyds imports {', '.join(SUPPORTED)}")
        fix = "the file is damaged; re-convert the model"
        inputs = [int(t) for t in (op.inputs if op.inputs is not None else [])]
        outputs = [int(t) for t in (op.outputs if op.outputs is not None else [])]
        n = len(self.sg.tensors)
        if (len(inputs) < MIN_INPUTS.get(opname, 1) or len(outputs) != 1
                or any(not -1 <= t < n for t in inputs) or not 0 <= outputs[0] < n
                or inputs[0] < 0 or inputs[MIN_INPUTS.get(opname, 1) - 1] < 0):
            raise self.err(where, f"inputs {inputs} / outputs {outputs} are not valid tensor "
                           f"indices for {opname}", fix)
        missing = [self.names[t] for t in inputs if t >= 0 and t not in available
                   and self._raw(t) is None]
        if missing:
            raise self.err(where, f"reads {missing[0]!r} before any operator computes it",
                           "operators must be in execution order; re-convert the model")
        if outputs[0] in available:
            raise self.err(where, f"writes {self.names[outputs[0]]!r}, which is already computed "
                           "or constant", fix)
        kind = OPTIONS[opname]
        if kind is not None and (op.builtinOptionsType != getattr(self.S.BuiltinOptions, kind)
                                 or op.builtinOptions is None):
            raise self.err(where, f"its builtin options ({kind}) are missing", fix)
        o = op.builtinOptions
        if opname in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"):
            params = {"stride": (o.strideH, o.strideW), "padding": (o.padding,)}
            if opname.endswith("POOL_2D"):
                params["filter"] = (o.filterHeight, o.filterWidth)
            else:
                params["dilation"] = (o.dilationHFactor, o.dilationWFactor)
            for key, values in params.items():
                ok = all(v in (0, 1) for v in values) if key == "padding" else min(values) >= 1
                if not ok:
                    raise self.err(where, f"{key} {values if len(values) > 1 else values[0]} is "
                                   "not valid", fix)
        available.add(outputs[0])
        return opname, where

    def weighted_inputs(self, op, where: str, axis: int) -> list[str]:
        """[x, weights, bias or ""] of a conv or fully connected operator, its int8 weights
        symmetric and per-tensor or per-channel along axis."""
        x = self.tensor(op.inputs[0], where)
        w = self.tensor(op.inputs[1], where)
        wt = self.g.tensors[w]
        if wt.data is None or wt.dtype != "int8":
            raise self.err(where, "weights are not a constant int8 tensor",
                           "convert with full-integer quantization")
        if np.any(wt.zero_point != 0):
            raise self.err(where, "weights have a nonzero zero point",
                           "int8 weights must be symmetric (TFLite's int8 quantization spec)")
        if len(wt.scale) not in (1, wt.shape[axis]) or (len(wt.scale) > 1 and wt.axis != axis):
            raise self.err(where, f"weight scales are not per-tensor or per-channel along axis {axis}",
                           "re-convert the model with the standard TFLite converter")
        b = ""
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = self.tensor(op.inputs[2], where)
            kinds = ("int32", "int64") if self.g.tensors[x].dtype == "int16" else ("int32",)
            if self.g.tensors[b].dtype not in kinds or self.g.tensors[b].data is None:
                raise self.err(where, f"bias is not a constant {' or '.join(kinds)} tensor",
                               "only int8 x int8 -> int32-bias and 16x8 (int64-bias) models import")
        return [x, w, b]

    def shape(self, idx: int) -> tuple[int, ...]:
        shape = self.sg.tensors[idx].shape
        return () if shape is None else tuple(int(d) for d in shape)

    def check_shape(self, where: str, idx: int, rank: int) -> tuple[int, ...]:
        shape = self.shape(idx)
        if len(shape) != rank:
            raise self.err(where, f"tensor {self.names[idx]!r} has shape {shape}, expected rank "
                           f"{rank}", "the file is damaged; re-convert the model")
        return shape

    def activation(self, code: int, where: str) -> str:
        if code not in ACTIVATIONS:
            raise self.err(where, f"fused activation {code} is not supported",
                           "use NONE, RELU or RELU6")
        return ACTIVATIONS[code]


def _check_uint8_edges(r: _Reader, g: Graph) -> None:
    """uint8 lives only at the model's edges, behind a QUANTIZE (TFLite's
    inference_input_type / inference_output_type = uint8); old uint8 layers do not import."""
    for op in g.ops:
        for name in op.inputs + op.outputs:
            if not name or g.tensors[name].dtype != "uint8":
                continue
            at_edge = op.type == "quantize" and (name in g.inputs or name in g.outputs)
            if not at_edge:
                raise r.err(op.name, f"{op.type} on uint8 tensor {name!r}",
                            "only the model's input or output may be uint8 (through a QUANTIZE); "
                            "re-convert with int8 layers (full-integer quantization)")


def load_tflite(path) -> Graph:
    """Read a fully-int8 .tflite into a quantized Graph with integer params derived."""
    path = Path(path)
    r = _Reader(path)
    sg, g = r.sg, r.g
    graph_in = [int(i) for i in (sg.inputs if sg.inputs is not None else [])]
    graph_out = [int(i) for i in (sg.outputs if sg.outputs is not None else [])]
    if not graph_in or not graph_out or len(set(graph_in)) != len(graph_in) \
            or len(set(graph_out)) != len(graph_out):
        raise r.err("graph", f"inputs {graph_in} and outputs {graph_out}",
                    "a model needs at least one input and one output, each listed once")
    if not all(0 <= i < len(sg.tensors or []) for i in graph_in + graph_out):
        raise r.err("graph", f"input {graph_in} or output {graph_out} is not a tensor index",
                    "the file is damaged; re-convert the model")
    layers: list[Op] = []
    available = set(graph_in)
    for i, op in enumerate(sg.operators or []):
        opname, where = r.check_op(i, op, available)
        if opname == "QUANTIZE" and op.inputs[0] in graph_in and \
                r._dtype(int(op.inputs[0]), where) == "float32":
            graph_in[graph_in.index(op.inputs[0])] = int(op.outputs[0])
            continue
        if opname == "DEQUANTIZE" and op.outputs[0] in graph_out:
            graph_out[graph_out.index(op.outputs[0])] = int(op.inputs[0])
            continue
        if opname == "DEQUANTIZE" or (opname == "QUANTIZE" and r._dtype(
                int(op.inputs[0]), where) not in ("int8", "uint8")):
            raise r.err(where, f"{opname} inside the graph",
                        "only int8/uint8 QUANTIZE and float QUANTIZE/DEQUANTIZE at the model's "
                        "input/output are supported")
        new = BUILTINS[opname].tflite.read(r, op, where)
        layers.extend(new if isinstance(new, list) else [new])
    for out_idx in graph_out:
        if out_idx not in available or out_idx in graph_in:
            raise r.err("output", f"no operator computes the model output {r.names[out_idx]!r}",
                        "the file is damaged; re-convert the model")
    g.ops = layers
    g.inputs = [r.tensor(i, "input") for i in graph_in]
    g.outputs = [r.tensor(i, "output") for i in graph_out]
    for name in g.inputs + g.outputs:
        t = g.tensors[name]
        if t.dtype not in (*ACT_DTYPES, "uint8") or t.shape[0] != 1:
            raise r.err(name, f"model input/output is {t.dtype} {t.shape}",
                        "the model must have batch 1 and int8, uint8, int16 (or QUANTIZE-d "
                        "float) edges")
    _check_uint8_edges(r, g)
    if g.input.dtype == "int16":
        _check_16x8(r, g)
    g.remove_unused_tensors()
    return requant.derive_int_params(g)


def _check_16x8(r: _Reader, g: Graph) -> None:
    """A 16x8 model: int16 activations throughout, ops that have int16 kernels."""
    for op in g.ops:
        if not ops.get(op.type).int16:
            covered = ", ".join(k for k, spec in ops.REGISTRY.items() if spec.int16)
            raise r.err(op.name, f"{op.type} with int16 activations is not supported",
                        f"16x8 models may use {covered}; convert to int8")
        for name in [n for n in op.inputs[:1] + op.outputs]:
            if g.tensors[name].dtype != "int16":
                raise r.err(op.name, f"tensor {name!r} is {g.tensors[name].dtype} in a 16x8 "
                            "model", "every activation of a 16x8 model must be int16")
