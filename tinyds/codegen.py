"""Quantized graph -> C library (and, via `generate`, the whole output folder).

Python decides (arena offsets, names, which kernel runs where); templates hold
the C. Each layer renders templates/ops/<type>.c.j2 once with its own
compile-time constants, and model.c.j2 strings the calls together.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from . import __version__, data_dir, mcu as mcu_table, ops, reference
from .errors import TinydsError
from .ir import Graph
from .planner import Plan, is_alias, plan

MARKER = "tinyds.json"      # marks a folder as tinyds output, which generate may replace
# Thumb-2 code per layer, for the fits-in-flash check before anything is written:
# arm-none-eabi-gcc -O2 -mcpu=cortex-m4 gives ~890 B/layer for the MLPerf KWS
# DS-CNN (11520 B, 13 layers) and ~940 for VWW MobileNetV1 (29084 B, 31 layers).
KERNEL_CODE_BYTES = 1024
SAMPLE_SEED = 0

C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed sizeof static struct
switch typedef union unsigned void volatile while _Bool _Complex _Imaginary""".split())


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


def sanitize_name(text: str) -> str:
    """A model file stem -> a C identifier usable as a symbol prefix."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")
    if not name:
        return "model"
    if name[0].isdigit() or name in C_KEYWORDS or _reserved(name):
        name = "m_" + name
    return name


def _reserved(name: str) -> bool:
    """tinyds_* files and symbols belong to the runtime (tinyds_common.h, src/tinyds_board.h, ...)."""
    return name.lower().startswith("tinyds")


def check_name(name: str) -> str:
    """A user-chosen --name must already be a C identifier: we never rename silently."""
    if not re.fullmatch(r"[A-Za-z][0-9A-Za-z_]*", name) or name in C_KEYWORDS:
        raise TinydsError(f"--name {name}: not a C identifier; use letters, digits and '_', "
                          f"starting with a letter (e.g. {sanitize_name(name)})")
    if _reserved(name):
        raise TinydsError(f"--name {name}: names starting with 'tinyds' are reserved for the "
                          f"runtime's own files and symbols; use e.g. {sanitize_name(name)}")
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


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False)


def weight_bytes(g: Graph) -> int:
    """Flash used by constants: tensors plus the per-channel requant arrays."""
    consts = {n for op in g.ops for n in op.inputs if n and g.tensors[n].is_const}
    tables = sum(v.nbytes for op in g.ops for v in op.attrs.values() if isinstance(v, np.ndarray))
    return sum(g.tensors[n].nbytes for n in consts) + tables


def _pointer(p: Plan, tensor: str, name: str) -> str:
    where, offset = p.location(tensor)
    if where == "arena":
        return f"{name}_arena.bytes + {offset}" if offset else f"{name}_arena.bytes"
    return where


def render_library(qg: Graph, name: str, source: str = "") -> tuple[dict[str, str], Library]:
    """The library's files as text, plus its figures. Nothing is written."""
    if not qg.is_quantized:
        raise TinydsError(f"{qg.name}: graph is not quantized; run tinyds.quantize.quantize first")
    env = environment()
    p = plan(qg)
    layers, kernels = [], []
    for i, op in enumerate(qg.ops):
        comment = f"{op.type} {op.name}".replace("*/", "* /")
        layer = {"c_name": _c_string(op.name), "comment": comment, "call": ""}
        if not is_alias(qg, op):
            fn = f"{name}_l{i}_{op.type}"
            try:
                template = env.get_template(f"ops/{op.type}.c.j2")
            except jinja2.TemplateNotFound:
                raise TinydsError(f"{qg.name}: {op.name}: no C kernel for {op.type}; run "
                                  "tinyds.passes.optimize before quantizing") from None
            kernels.append(template.render(fn=fn, prefix=name, **ops.get(op.type).c_params(qg, op)))
            args = [_pointer(p, t, name) for t in op.inputs if t and not qg.tensors[t].is_const]
            layer["call"] = f"{fn}({', '.join(args + [_pointer(p, op.outputs[0], name)])})"
        layers.append(layer)
    x, y = qg.input, qg.output
    (s_in, zp_in), (s_out, zp_out) = x.qparams, y.qparams
    ctx = dict(
        name=name, NAME=name.upper(), source=(source or qg.name).replace("*/", "* /"),
        layers=layers, kernels=kernels,
        input_shape="x".join(map(str, x.shape)), output_shape="x".join(map(str, y.shape)),
        input_size=x.size, output_size=y.size, arena_size=p.arena_size,
        unshared_size=p.unshared_size, input_scale=_c_float(s_in), input_zero_point=zp_in,
        output_scale=_c_float(s_out), output_zero_point=zp_out,
        copy_through=p.location(qg.outputs[0])[0] == "input")
    files = {
        f"{name}.h": env.get_template("model.h.j2").render(**ctx),
        f"{name}.c": env.get_template("model.c.j2").render(**ctx),
        "tinyds_common.h": (data_dir("templates") / "tinyds_common.h").read_text(),
    }
    lib = Library(name, Path(), p, p.arena_size, weight_bytes(qg), x.size, y.size, len(qg.ops))
    return files, lib


def generate_library(qg: Graph, lib_dir, name: str, source: str = "") -> Library:
    """Write NAME.c, NAME.h and tinyds_common.h into lib_dir (created if needed)."""
    files, lib = render_library(qg, name, source)
    lib_dir = Path(lib_dir)
    lib_dir.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (lib_dir / fname).write_text(text)
    lib.lib_dir = lib_dir
    return lib


def harness_source(name: str) -> str:
    """C main() that streams a file of input vectors through NAME_run (host verify)."""
    return environment().get_template("harness/harness.c.j2").render(name=name, NAME=name.upper())


@dataclass
class GenerateResult:
    out_dir: Path
    library: Library

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
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise TinydsError(f"{out}: exists and is not a folder; choose another -o")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise TinydsError(f"{out}: folder exists and is not a tinyds output (no {MARKER}); "
                          "refusing to overwrite it; choose another -o or empty it")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Swap the finished tmp folder in for out, so out is never half-written."""
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _sample(qg: Graph, vectors) -> np.ndarray:
    if vectors is not None and len(vectors):
        return np.asarray(vectors[:1], dtype=np.int8)
    rng = np.random.default_rng(SAMPLE_SEED)
    return rng.integers(-128, 128, (1, *qg.input.shape[1:]), dtype=np.int8)


def generate(qg: Graph, out_dir, name: str, mcu: str = "stm32f4", vectors=None,
             source: str = "") -> GenerateResult:
    """Write out_dir: lib/NAME/ (the C library), verify/ (quantized model and test
    vectors for `tinyds verify`), the firmware project, and the tinyds.json marker.

    vectors: int8 NHWC inputs (quantized calibration data) that verify replays.
    All of it is written into a temporary sibling folder and renamed at the end,
    so a failure never leaves a folder that looks like valid output.
    """
    from . import project, verify
    out = Path(out_dir).resolve()
    files, lib = render_library(qg, name, source)
    mcu_table.check_fits(mcu, lib.weight_bytes + KERNEL_CODE_BYTES * lib.num_layers,
                         lib.arena_bytes + lib.input_size + lib.output_size, source or qg.name)
    check_out_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    except OSError as e:
        raise TinydsError(f"{out}: cannot create the output folder ({e.strerror}); "
                          "choose another -o") from None
    try:
        lib_dir = tmp / "lib" / name
        lib_dir.mkdir(parents=True)
        for fname, text in files.items():
            (lib_dir / fname).write_text(text)
        verify.save_bundle(tmp / verify.BUNDLE, qg, vectors)
        sample = _sample(qg, vectors)
        project.write_project(tmp, name, mcu, sample[0], reference.run(qg, sample)[0])
        (tmp / MARKER).write_text(json.dumps({
            "tool": "tinyds", "version": __version__, "name": name, "mcu": mcu,
            "source": source or qg.name, "arena_bytes": lib.arena_bytes,
            "weight_bytes": lib.weight_bytes, "layers": lib.num_layers}, indent=2) + "\n")
        _replace_dir(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TinydsError(f"{out}: cannot write the output ({e}); check the disk and "
                          "permissions, or choose another -o") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lib.lib_dir = out / "lib" / name
    return GenerateResult(out, lib)
