"""Quantized graph -> C library (and, via `generate`, the whole output folder).

Python decides (arena offsets, names, which kernel runs where); templates hold
the C. Each layer renders templates/ops/<type>.c.j2 once with its own
compile-time constants, and model.c.j2 strings the calls together.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from . import (__version__, data_dir, kernels as kernel_choice, mcu as mcu_table, project,
               reference, weight_blob)
from .errors import TinydsError
from .ir import C_TYPES, Graph
from .planner import Plan, is_alias, plan, scratch_name

RUNTIME_HEADERS = ("tinyds_common.h", "tinyds_dsp.h")
INT16_HEADER = "tinyds_int16.h"     # beside 16x8 models only: int8 libraries stay as they were
MARKER = "tinyds.json"      # marks a folder as tinyds output, which generate may replace
# Thumb-2 code per layer, for the fits-in-flash check before anything is written:
# arm-none-eabi-gcc -O2 -mcpu=cortex-m4 gives ~890 B/layer for the MLPerf KWS
# DS-CNN (11520 B, 13 layers) and ~940 for VWW MobileNetV1 (29084 B, 31 layers).
KERNEL_CODE_BYTES = 1024
SAMPLE_SEED = 0

C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed sizeof static struct
switch typedef union unsigned void volatile while _Bool _Complex _Imaginary""".split())
# NAME.h must not shadow a C standard header (C99/C11), nor NAME.c build beside a firmware
# file of the same stem; compared case-insensitively for case-insensitive file systems.
C_HEADERS = frozenset("""assert complex ctype errno fenv float inttypes iso646 limits locale math
setjmp signal stdalign stdarg stdatomic stdbool stddef stdint stdio stdlib stdnoreturn string
tgmath threads time uchar wchar wctype""".split())
FIRMWARE_FILES = frozenset(["main", "vector_runner", "harness",
                            *(Path(f).stem for f in project.FIRMWARE_SOURCES)])
MAX_NAME = 64            # file names, and symbols every toolchain keeps distinct
NO_MICROPYTHON_INT16 = ("--micropython takes int8 models only (its run() takes int8 buffers); "
                        "generate the 16x8 model without --micropython, or use --activations int8")


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


def sanitize_name(text: str) -> str:
    """A model file stem -> a C identifier usable as a symbol prefix."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")[:MAX_NAME - 2].rstrip("_")
    if not name:
        return "model"
    if name[0].isdigit() or name in C_KEYWORDS or _clash(name):
        name = "m_" + name
    return name


def _clash(name: str) -> str:
    """What a name would collide with, or "" when it is free."""
    low = name.lower()
    if low.startswith("tinyds"):
        return "names starting with 'tinyds' are reserved for the runtime's own files and symbols"
    if low in C_HEADERS:
        return f"{name}.h would shadow the C library's <{low}.h>"
    if low in FIRMWARE_FILES:
        return f"{name}.c would clash with the firmware's own {low}.c"
    return ""


def check_name(name: str) -> str:
    """A user-chosen --name must already be a C identifier: we never rename silently."""
    if not re.fullmatch(r"[A-Za-z][0-9A-Za-z_]*", name) or name in C_KEYWORDS:
        raise TinydsError(f"--name {name[:MAX_NAME]}: not a C identifier; use letters, digits "
                          f"and '_', starting with a letter (e.g. {sanitize_name(name)})")
    if len(name) > MAX_NAME:
        raise TinydsError(f"--name {name[:MAX_NAME]}...: {len(name)} characters, more than "
                          f"{MAX_NAME}; use e.g. {sanitize_name(name)}")
    if _clash(name):
        raise TinydsError(f"--name {name}: {_clash(name)}; use e.g. {sanitize_name(name)}")
    return name


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


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """One environment for the process: it keeps every template compiled (compiling them
    again on each generate cost most of its time); it reloads a template whose file changed."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False)


def weight_bytes(g: Graph, chosen=None) -> int:
    """Flash used by constants: tensors plus the per-channel requant arrays; a fast
    kernel's int16 weight stream counts 4 bytes per word."""
    return sum(layer_weight_bytes(g, op, chosen[i] if chosen else None)
               for i, op in enumerate(g.ops))


def layer_weight_bytes(g: Graph, op, k=None) -> int:
    """One layer's share of weight_bytes, k its chosen kernel."""
    if k is not None and k.fast:
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
                   target: kernel_choice.Target = kernel_choice.Target(), labels=()
                   ) -> tuple[dict[str, str], Library]:
    """The library's files as text, plus its figures. Nothing is written.

    target: the core's features and --optimize, which pick each layer's kernel.
    labels: a class name per output byte (--labels), or none."""
    if not qg.is_quantized:
        raise TinydsError(f"{qg.name}: graph is not quantized; run tinyds.quantize.quantize first")
    env = environment()
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
            kernels.append(weight_blob.externalize(env.get_template(
                f"ops/{k.template}.c.j2").render(fn=fn, prefix=name, **k.params),
                f"{name.upper()}_W", blob))
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
        layers=layers, kernels=kernels, dsp=any(k is not None and k.dsp for k in chosen),
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
        f"{name}.h": env.get_template("model.h.j2").render(**ctx),
        f"{name}.c": env.get_template("model.c.j2").render(**ctx),
        f"{name}_io.c": env.get_template("model_io.c.j2").render(**ctx),
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
                     target: kernel_choice.Target = kernel_choice.Target()) -> Library:
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
    return environment().get_template("harness/harness.c.j2").render(name=name, NAME=name.upper())


@dataclass
class GenerateResult:
    out_dir: Path
    library: Library
    micropython: tuple = ()   # with --micropython: one line per natmod architecture
    kept: tuple = ()          # generated files the user edited, left as they were
    removed: tuple = ()       # files an earlier generate wrote that this one does not

    @property
    def name(self) -> str:
        return self.library.name

    @property
    def arena_bytes(self) -> int:
        return self.library.arena_bytes

    @property
    def weight_bytes(self) -> int:
        return self.library.weight_bytes


def check_out_dir(out: Path) -> None:
    """Only an empty folder or an earlier tinyds output may be replaced."""
    try:
        _check_out_dir(out)
    except OSError as e:                  # a name too long for the file system, no permission
        raise TinydsError(f"{str(out)[:80]}: cannot be the output folder ({e.strerror}); "
                          "choose another -o") from None


def _check_out_dir(out: Path) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise TinydsError(f"{out}: exists and is not a folder; choose another -o")
    if any(out.iterdir()) and not is_marker(out / MARKER):
        raise TinydsError(f"{out}: folder exists and is not a tinyds output (no {MARKER} "
                          "written by tinyds); refusing to overwrite it; choose another -o or "
                          "empty it")


def is_marker(path: Path) -> bool:
    """Whether path is a marker tinyds wrote (its content, not just its name: a user's own
    tinyds.json does not make their folder replaceable; nor does a link to one)."""
    if path.is_symlink():
        return False
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("tool") == "tinyds" and isinstance(
        meta.get("name"), str) and isinstance(meta.get("mcu"), str)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _recorded(out: Path) -> dict[str, str]:
    """The file hashes the previous generate recorded in out/tinyds.json ({} if none)."""
    if not is_marker(out / MARKER):
        return {}
    files = json.loads((out / MARKER).read_text()).get("files", {})
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(files, dict) else {}


def _sample(qg: Graph, vectors) -> np.ndarray:
    if vectors is not None and len(vectors):
        return np.asarray(vectors[:1], dtype=qg.input.dtype)
    rng = np.random.default_rng(SAMPLE_SEED)
    if len(qg.inputs) > 1:       # packed: every input's bytes in order
        return rng.integers(-128, 128, (1, sum(qg.tensors[n].size for n in qg.inputs)),
                            dtype=np.int8)
    lo, hi = qg.input.qrange
    return rng.integers(lo, hi + 1, (1, *qg.input.shape[1:])).astype(qg.input.dtype)


def flash_need(lib: Library) -> int:
    return lib.weight_bytes + KERNEL_CODE_BYTES * lib.num_layers


def render_for_mcu(qg: Graph, name: str, mcu: str, optimize: str = "speed", source: str = "",
                   labels=()):
    """render_library for an MCU; under "speed", layers whose int16 weight streams would
    overflow the MCU's flash fall back to int8 ("size"), largest first, then ADDs' tables."""
    target = kernel_choice.Target.for_mcu(mcu, optimize)
    files, lib = render_library(qg, name, source, target, labels)
    budget = mcu_table.get(mcu).flash - mcu_table.RUNTIME_FLASH_BYTES
    fast = sorted((i for i, k in enumerate(lib.kernels) if k is not None and k.fast),
                  key=lambda i: -len(lib.kernels[i].params["stream"]))
    fast += [i for i, k in enumerate(lib.kernels) if k is not None and "table1" in k.params]
    size_layers = set()
    while flash_need(lib) > budget and fast:
        size_layers.add(fast.pop(0))
        target = kernel_choice.Target(target.dsp, optimize, frozenset(size_layers))
        files, lib = render_library(qg, name, source, target, labels)
    return files, lib


def check_labels(labels, output_size: int, where: str) -> list[str]:
    """One class name per output byte, each one line of printable text."""
    labels = list(labels or ())
    if labels and len(labels) != output_size:
        raise TinydsError(f"{where}: --labels gives {len(labels)} labels for {output_size} "
                          "outputs; write one label per line, one per output")
    return labels


def read_labels(path) -> list[str]:
    """--labels FILE: one label per line, blank lines at the end ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TinydsError(f"{path}: cannot read the labels ({e}); give a UTF-8 text file "
                          "with one label per line") from None
    return text.rstrip("\r\n").splitlines() if text.strip() else []


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


def generate(qg: Graph, out_dir, name: str, mcu: str = "stm32f4", vectors=None,
             source: str = "", optimize: str = "speed", micropython: bool = False,
             quant_report=None, lib_only: bool = False, force: bool = False, labels=(),
             tflite: bytes | None = None) -> GenerateResult:
    """Write out_dir: lib/NAME/ (the C library), verify/ (quantized model and test
    vectors for `tinyds verify`), the firmware project, and the tinyds.json marker.

    vectors: int8 NHWC inputs (quantized calibration data) that verify replays.
    micropython: also write micropython/, the library as a MicroPython native module.
    quant_report: the quantize.Report whose figures report.json/report.html show.
    lib_only: write lib/NAME/ and the marker only.
    labels: a class name per output byte, for NAME_labels[].
    tflite: the original .tflite's bytes, kept as verify/source.tflite for bench's TFLM figure.
    force: also replace generated files the user edited (never src/main.c nor a file
    tinyds did not write; see outdir.py).
    Everything is rendered into a temporary sibling folder first, so a failure never
    leaves a half-written output; a new folder is renamed into place, an existing one
    takes the files one atomic rename each, the marker last.
    """
    from . import bundle, outdir, project, report
    out = Path(out_dir).resolve()
    labels = check_labels(labels, qg.output.size, name)
    if micropython and qg.input.dtype != "int8":
        raise TinydsError(f"{source or qg.name}: {NO_MICROPYTHON_INT16}")
    files, lib = render_for_mcu(qg, name, mcu, optimize, source, labels)
    mcu_table.check_fits(mcu, flash_need(lib), lib.plan.ram, source or qg.name)
    check_out_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        tmp.chmod(0o777 & ~_umask())          # mkdtemp's 0700 would become out/'s mode
    except OSError as e:
        raise TinydsError(f"{out}: cannot create the output folder ({e.strerror}); "
                          "choose another -o") from None
    try:
        lib_dir = tmp / "lib" / name
        lib_dir.mkdir(parents=True)
        for fname, text in files.items():
            (lib_dir / fname).write_text(text)
        (lib_dir / "CMakeLists.txt").write_text(project.library_cmake(name))
        natmod = ()
        if not lib_only:
            bundle.save_bundle(tmp / bundle.BUNDLE, qg, vectors)
            if tflite is not None:
                (tmp / bundle.BUNDLE / bundle.SOURCE_TFLITE).write_bytes(tflite)
            if micropython:
                from . import micropython as mpy
                natmod = tuple(mpy.write(tmp / "micropython", mpy.render_sources(
                    {f: t for f, t in files.items() if f != f"{name}_io.c"}, name, source or qg.name, lib.input_size, lib.output_size, mcu,
                    lib.weights, [qg.tensors[n].size for n in qg.inputs],
                    [qg.tensors[n].size for n in qg.outputs], (qg.input.dtype, qg.output.dtype)),
                    name, mcu))
            report.write(tmp, report.document(qg, lib, mcu, optimize, name, source or qg.name,
                                              quant_report))
            sample = _sample(qg, vectors)
            single = len(qg.inputs) == 1 and len(qg.outputs) == 1
            project.write_project(tmp, name, mcu, sample[0], reference.run_packed(qg, sample)[0],
                                  files if single else None, lib.plan.input_in_arena,
                                  lib.plan.output_in_arena, bool(labels))
        meta = {
            "tool": "tinyds", "version": __version__, "name": name, "mcu": mcu,
            "source": source or qg.name, "arena_bytes": lib.arena_bytes,
            "weight_bytes": lib.weight_bytes, "layers": lib.num_layers, "optimize": optimize,
            "fast_layers": [i for i, k in enumerate(lib.kernels) if k is not None and k.fast],
            "vectors": len(bundle.stored_vectors(vectors)), "lib_only": lib_only,
            "labels": list(labels)}
        kept, removed = [], []
        if out.exists():
            meta["files"], kept, removed = outdir.merge(tmp, out, _recorded(out), force)
            shutil.rmtree(tmp, ignore_errors=True)
            outdir.write_atomic(out / MARKER, json.dumps(meta, indent=2) + "\n")
        else:
            meta["files"] = {rel: outdir.sha256(p) for rel, p in outdir.tree(tmp).items()
                             if rel not in outdir.USER_FILES}
            (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TinydsError(f"{out}: cannot write the output ({e}); check the disk and "
                          "permissions, or choose another -o") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lib.lib_dir = out / "lib" / name
    return GenerateResult(out, lib, natmod, tuple(kept), tuple(removed))
