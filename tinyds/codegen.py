"""Quantized graph -> the C library's files as text, and the Library that describes them
(kernels chosen, arena plan, bytes). Nothing here writes an output folder: that is
tinyds.generate and the writers in tinyds/outputs/.

Python decides (arena offsets, names, which kernel runs where); templates hold
the C. Each layer renders templates/ops/<type>.c.j2 once with its own
compile-time constants, and model.c.j2 strings the calls together.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data_dir, kernels as kernel_choice, targets, templating, weight_blob
from .errors import TinydsError
from .ir import C_TYPES, Graph
from .planner import Plan, is_alias, plan, scratch_name

RUNTIME_HEADERS = ("tinyds_common.h", "tinyds_dsp.h")
INT16_HEADER = "tinyds_int16.h"     # beside 16x8 models only: int8 libraries stay as they were
# Thumb-2 code per layer, for the fits-in-flash check before anything is written:
# arm-none-eabi-gcc -O2 -mcpu=cortex-m4 gives ~890 B/layer for the MLPerf KWS
# DS-CNN (11520 B, 13 layers) and ~940 for VWW MobileNetV1 (29084 B, 31 layers).
KERNEL_CODE_BYTES = 1024


@dataclass
class Library:
    """What was generated and how big it is."""
    name: str
    lib_dir: Path
    plan: Plan
    arena_bytes: int
    weight_bytes: int      # const data placed in flash: weights, biases, multipliers, shifts
    input_size: int
    output_size: int
    num_layers: int
    kernels: list = None   # per op: the kernels.Kernel chosen (None for a reshape)
    weights: bytes = b""   # every constant array, for -DTINYDS_WEIGHTS_EXTERNAL (weight_blob)


def _c_string(text: str) -> str:
    """A C string literal for arbitrary text (layer names come from user models)."""
    out = []
    for ch in text:
        if ch in '"\\?':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def _c_float(x) -> str:
    """Shortest decimal that reads back as the same float32."""
    text = str(np.float32(x))
    return text if any(c in text for c in ".en") else text + ".0"


def weight_bytes(g: Graph, chosen=None) -> int:
    """Flash used by constants: tensors plus the per-channel requant arrays; a fast
    kernel's int16 weight stream counts 4 bytes per word."""
    return sum(layer_weight_bytes(g, op, chosen[i] if chosen else None)
               for i, op in enumerate(g.ops))


def layer_weight_bytes(g: Graph, op, k=None) -> int:
    """One layer's share of weight_bytes, k its chosen kernel."""
    if k is not None and k.int16_weights:
        total = 4 * (len(k.params["stream"]) + len(k.params["bias"]) + len(k.params["mult"]))
        return total + (4 * len(k.params["shift"]) if k.params["requant"] == "tflite" else 0)
    consts = [n for n in op.inputs if n and g.tensors[n].is_const]
    tables = 4 * 512 if k is not None and "table1" in k.params else 0
    return (tables + sum(g.tensors[n].nbytes for n in consts)
            + sum(v.nbytes for v in op.attrs.values() if isinstance(v, np.ndarray)))


def _pointer(p: Plan, tensor: str, qg: Graph) -> str:
    """The C expression for a tensor's bytes: in the arena (cast for a uint8 or int16 tensor;
    the planner keeps offsets 4-aligned), or the
    caller's buffer (`input`/`output`; `inputs[i]`/`outputs[i]` in a model with several)."""
    where, offset = p.location(tensor)
    if where == "arena":
        at = f"arena + {offset}" if offset else "arena"
        dtype = qg.tensors[tensor].dtype if tensor in qg.tensors else "int8"
        return at if dtype == "int8" else f"({C_TYPES[dtype]} *)(void *)({at})"
    if len(qg.inputs) == 1 and len(qg.outputs) == 1:
        return where
    names = qg.inputs if where == "input" else qg.outputs
    return f"{where}s[{next(i for i, n in enumerate(names) if n in p.by_tensor[tensor].tensors)}]"


def _io(qg: Graph, p: Plan, names) -> list[dict]:
    """Per input (or output) what NAME.h says of it."""
    return [dict(index=i, name=n, size=t.size, shape=list(t.shape),
                 shape_text="x".join(map(str, t.shape)), scale=_c_float(t.qparams[0]),
                 zero_point=t.qparams[1], offset=p.location(n)[1])
            for i, (n, t) in enumerate((n, qg.tensors[n]) for n in names)]


def render_library(qg: Graph, name: str, source: str = "",
                   target: kernel_choice.KernelOptions = kernel_choice.KernelOptions(), labels=()
                   ) -> tuple[dict[str, str], Library]:
    """The library's files as text, plus its figures. Nothing is written.

    target: the core's features and --optimize, which pick each layer's kernel.
    labels: a class name per output byte (--labels), or none."""
    if not qg.is_quantized:
        raise TinydsError(f"{qg.name}: graph is not quantized; run tinyds.quantize.quantize first")
    chosen = [None if is_alias(qg, op) else kernel_choice.choose(qg, op, target) for op in qg.ops]
    p = plan(qg, chosen)
    single = len(qg.inputs) == 1 and len(qg.outputs) == 1
    if not single:
        _check_io_buffers(qg, p)
        edges = [n for n in qg.inputs + qg.outputs if qg.tensors[n].dtype != "int8"]
        if edges:
            raise TinydsError(f"{qg.name}: {qg.tensors[edges[0]].dtype} model edge {edges[0]!r}: "
                              "uint8 edges and int16 activations are supported for one input "
                              "and one output; convert the model with int8 inputs and outputs")
    layers, kernels = [], []
    blob = weight_blob.Blob()
    for i, (op, k) in enumerate(zip(qg.ops, chosen)):
        comment = f"{op.type} {op.name}".replace("*/", "* /")
        layer = {"c_name": _c_string(op.name), "comment": comment, "call": "",
                 "out": _pointer(p, op.outputs[0], qg),
                 "out_size": qg.tensors[op.outputs[0]].nbytes}
        if k is not None:
            fn = f"{name}_l{i}_{op.type}"
            kernels.append(templating.render(f"ops/{k.template}.c.j2", fn=fn, prefix=name,
                                             blob=blob, **k.params))
            args = [_pointer(p, t, qg) for t in op.inputs if t and not qg.tensors[t].is_const]
            args.append(_pointer(p, op.outputs[0], qg))
            if k.scratch:
                args.append(_pointer(p, scratch_name(i), qg))
            layer["call"] = f"{fn}({', '.join(args)})"
        layers.append(layer)
    x, y = qg.input, qg.output
    (s_in, zp_in), (s_out, zp_out) = x.qparams, y.qparams
    ctx = dict(
        name=name, NAME=name.upper(), source=(source or qg.name).replace("*/", "* /"),
        layers=layers, kernels=kernels,
        in_t=C_TYPES[x.dtype], out_t=C_TYPES[y.dtype], input_type=x.dtype, output_type=y.dtype,
        input_min=x.qrange[0], input_max=x.qrange[1],
        input_shape="x".join(map(str, x.shape)), output_shape="x".join(map(str, y.shape)),
        input_size=x.size, output_size=y.size, arena_size=p.arena_size,
        unshared_size=p.unshared_size, input_scale=_c_float(s_in), input_zero_point=zp_in,
        output_scale=_c_float(s_out), output_zero_point=zp_out,
        copy_through=p.location(qg.outputs[0])[0] == "input",
        input_in_arena=p.input_in_arena, input_offset=p.location(qg.inputs[0])[1],
        output_in_arena=p.output_in_arena, output_offset=p.location(qg.outputs[0])[1],
        uses_input=p.input_in_arena or any("input" in layer["call"].split("(", 1)[-1]
                                           for layer in layers),
        uses_output=any("outputs[" in layer["call"] for layer in layers),
        single=single, inputs=_io(qg, p, qg.inputs), outputs=_io(qg, p, qg.outputs),
        labels=[_c_string(label) for label in labels], act_t=f"{x.dtype}_t",
        weights_size=blob.size, weights_version=weight_blob.VERSION,
        weights_checksum=f"{blob.checksum:#010x}")
    files = {
        f"{name}.h": templating.render("model.h.j2", **ctx),
        f"{name}.c": templating.render("model.c.j2", **ctx),
        f"{name}_io.c": templating.render("model_io.c.j2", **ctx),
    }
    for header in RUNTIME_HEADERS + ((INT16_HEADER,) if x.dtype == "int16" else ()):
        files[header] = (data_dir("templates") / header).read_text()
    lib = Library(name, Path(), p, p.arena_size, weight_bytes(qg, chosen),
                  sum(qg.tensors[n].size for n in qg.inputs),
                  sum(qg.tensors[n].size for n in qg.outputs), len(qg.ops), chosen,
                  blob.to_bytes())
    return files, lib


def _check_io_buffers(qg: Graph, p: Plan) -> None:
    """Each input and output of a several-I/O model has bytes of its own: an output that is
    an input (or a reshape of one), or two outputs of the same bytes, is refused."""
    for name in qg.outputs:
        b = p.by_tensor[name]
        twin = [n for n in qg.inputs + qg.outputs if n != name and n in b.tensors]
        if twin:
            raise TinydsError(f"{qg.name}: output {name} holds the same bytes as {twin[0]} "
                              "(a reshape of it, or it); return a tensor computed by a layer, "
                              "each once")


def generate_library(qg: Graph, lib_dir, name: str, source: str = "",
                     target: kernel_choice.KernelOptions = kernel_choice.KernelOptions()) -> Library:
    """Write NAME.c, NAME.h and the runtime headers into lib_dir (created if needed)."""
    files, lib = render_library(qg, name, source, target)
    lib_dir = Path(lib_dir)
    lib_dir.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (lib_dir / fname).write_text(text)
    lib.lib_dir = lib_dir
    return lib


def harness_source(name: str) -> str:
    """C main() that streams a file of input vectors through NAME_run (host verify); the
    header's NAME_input_t / NAME_output_t give the element types."""
    return templating.render("harness/harness.c.j2", name=name, NAME=name.upper())


def flash_need(lib: Library) -> int:
    return lib.weight_bytes + KERNEL_CODE_BYTES * lib.num_layers


def render_for_mcu(qg: Graph, name: str, target: targets.Target, optimize: str = "speed",
                   source: str = "", labels=()):
    """render_library for a board; under "speed", layers whose int16 weight streams would
    overflow its flash fall back to int8 ("size"), largest first, then ADDs' tables."""
    options = kernel_choice.KernelOptions.for_target(target, optimize)
    files, lib = render_library(qg, name, source, options, labels)
    budget = target.flash - targets.RUNTIME_FLASH_BYTES
    fast = sorted((i for i, k in enumerate(lib.kernels) if k is not None and k.int16_weights),
                  key=lambda i: -len(lib.kernels[i].params["stream"]))
    fast += [i for i, k in enumerate(lib.kernels) if k is not None and "table1" in k.params]
    size_layers = set()
    while flash_need(lib) > budget and fast:
        size_layers.add(fast.pop(0))
        options = kernel_choice.KernelOptions(options.dsp, optimize, frozenset(size_layers))
        files, lib = render_library(qg, name, source, options, labels)
    return files, lib


def kernel_report(qg: Graph, lib: Library) -> str:
    """One line per layer: which kernel runs it and why (printed by generate)."""
    lines = []
    for op, k in zip(qg.ops, lib.kernels):
        if k is None:
            continue
        kind = "fast" if k.dsp else "portable"
        place = f", in place ({k.inplace})" if k.inplace else ""
        lines.append(f"  {op.name[:32]:<32} {op.type:<17} {kind}{': ' + k.note if k.note else ''}"
                     f"{place}")
    return "\n".join(lines)
