"""Host check of a generated library: compile it warning-free, run a batch of
vectors through it (also under AddressSanitizer and UBSan) and compare every
output byte with the NumPy reference, which is the spec.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import progress, reference, targets
from .bundle import BUNDLE, load_graph
from .codegen import harness_source
from .errors import TinydsError
from .ir import Graph
from .outdir import MARKER, is_marker
from .targets import Target

RANDOM_VECTORS = 1000
REFERENCE_CHUNK = 128
REALISTIC_SIGMAS = (4.0, 12.0, 32.0)   # int8 steps around the input zero point

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
ARM_CC = "arm-none-eabi-gcc"
BUILDS = {
    "release": ["-O2"],
    "sanitize": ["-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all"],
    "layers": ["-O2", "-DTINYDS_DUMP"],     # every layer's output bytes, for check_layers
}
OUTPUT_BUILDS = ("release", "sanitize")
# The per-layer check reads every intermediate tensor: the first vectors (extremes,
# calibration, realistic) keep it quick on big models.
LAYER_VECTORS = 64
# Instrumented code runs ~10x slower; memory errors in kernels with static shapes
# do not depend on the data, so the sanitizer gets the extremes, the calibration
# vectors and random ones up to this many, the -O2 build every vector.
SANITIZE_VECTORS = 256
# Leak checking needs ptrace, which containers often forbid; the harness frees what it allocates.
# A library whose NAME_run never returns must not hang verify: every run has this long.
RUN_TIMEOUT_S = 600
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
                 "UBSAN_OPTIONS": "print_stacktrace=1"}


def compiler() -> str:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise TinydsError(f"{cc}: host C compiler not found; install gcc or set CC")
    return cc


def host_flags(target: Target | None) -> list[str]:
    """What makes a host build take the board's code path: on a DSP core the portable
    kernels' TINYDS_DSP loops (SXTB16 + SMLAD, here through tinyds_dsp.h's C twins)."""
    return ["-DTINYDS_DSP=1"] if target is not None and target.dsp else []


def build_command(lib_dir: Path, name: str, harness: Path, exe: Path, build: str,
                  target: Target | None = None) -> list[str]:
    return [compiler(), *CFLAGS, *BUILDS[build], *host_flags(target), "-I", str(lib_dir),
            str(harness), *map(str, library_sources(lib_dir, name)), "-o", str(exe)]


def library_sources(lib_dir: Path, name: str) -> list[Path]:
    """NAME.c, and NAME_io.c (the float helpers) where the library has it."""
    io = Path(lib_dir) / f"{name}_io.c"
    return [Path(lib_dir) / f"{name}.c"] + ([io] if io.is_file() else [])


def compile_host(lib_dir, name: str, build_dir, build: str = "release",
                 target: Target | None = None) -> Path:
    """Compile the library in lib_dir with the harness into build_dir; returns the executable.
    target: the board whose code path the build takes (host_flags)."""
    lib_dir, build_dir = Path(lib_dir), Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    harness = build_dir / "harness.c"
    harness.write_text(harness_source(name))
    exe = build_dir / f"{name}_{build}"
    cmd = build_command(lib_dir, name, harness, exe, build, target)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        first = next((ln for ln in res.stderr.splitlines() if "error" in ln), res.stderr.strip())
        raise TinydsError(f"{lib_dir / (name + '.c')}: host compile ({build}) failed: {first}")
    return exe


def compile_target(lib_dir: Path, name: str, target: Target, build_dir: Path) -> str:
    """Compile the library for the board's core with arm-none-eabi-gcc, same warnings, if
    installed."""
    mcu = target.name
    if shutil.which(ARM_CC) is None:
        return f"{ARM_CC} not installed: cross-compile for {mcu} skipped"
    for src in library_sources(lib_dir, name):
        cmd = [ARM_CC, *target.cflags, *CFLAGS, "-O2", "-c", str(src), "-I", str(lib_dir),
               "-o", str(build_dir / f"{src.stem}_{mcu}.o")]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            first = next((ln for ln in res.stderr.splitlines() if "error" in ln),
                         res.stderr.strip())
            raise TinydsError(f"{src}: {ARM_CC} for {mcu} failed: {first}")
    return f"{name}: compiled with {ARM_CC} {' '.join(target.cflags)} {' '.join(CFLAGS)}: clean"


def run_host(exe, x: np.ndarray, output_size: int, layer_sizes=None, out_dtype="int8"):
    """Stream the batch x (N, ...) of the model's input type through exe; returns
    (N, output_size) of out_dtype, the model's output type.

    layer_sizes: exe is a "layers" build; also returns each layer's output values, a list
    of (N, size) arrays in layer order (int16 in a 16x8 model, else int8 bytes)."""
    x = np.ascontiguousarray(x)
    with tempfile.TemporaryDirectory(prefix="tinyds-run-") as tmp:
        src, dst, dump = Path(tmp) / "in.bin", Path(tmp) / "out.bin", Path(tmp) / "layers.bin"
        src.write_bytes(x.tobytes())
        argv = [str(exe), str(src), str(dst)] + ([str(dump)] if layer_sizes is not None else [])
        try:
            res = subprocess.run(argv, capture_output=True, text=True,
                                 env={**os.environ, **SANITIZER_ENV}, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise TinydsError(f"{exe}: generated C did not finish {len(x)} vectors within "
                              f"{RUN_TIMEOUT_S} s (does NAME_run return?); run tinyds generate "
                              "again") from None
        if res.returncode != 0:
            lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
            summary = next((ln for ln in lines if "SUMMARY" in ln or "runtime error" in ln),
                           lines[0] if lines else f"exit code {res.returncode}")
            raise TinydsError(f"{exe}: generated C failed at run time: {summary}")
        y = np.frombuffer(dst.read_bytes(), dtype=out_dtype)
        dumped = np.frombuffer(dump.read_bytes(), dump_dtype(out_dtype)) \
            if layer_sizes is not None else None
    n = x.shape[0]
    if y.size != n * output_size:
        raise TinydsError(f"{exe}: produced {y.size} bytes for {n} vectors of {output_size}")
    if dumped is None:
        return y.reshape(n, output_size)
    return y.reshape(n, output_size), split_layers(dumped, n, layer_sizes, exe)


def dump_dtype(out_dtype) -> type:
    """The element of a TINYDS_DUMP stream: int16 in a 16x8 model, else bytes (int8; a uint8
    output layer's bytes are viewed as uint8 by check_layers)."""
    return np.int16 if np.dtype(out_dtype) == np.int16 else np.int8


def split_layers(dumped: np.ndarray, n: int, layer_sizes, where) -> list[np.ndarray]:
    """A TINYDS_DUMP stream (per vector, every layer's output in order) -> (n, size) per layer."""
    if dumped.size != n * sum(layer_sizes):
        raise TinydsError(f"{where}: dumped {dumped.size} layer bytes for {n} vectors of "
                          f"{sum(layer_sizes)}; run tinyds generate again")
    per_vector = dumped.reshape(n, sum(layer_sizes))
    bounds = np.cumsum([0, *layer_sizes])
    return [per_vector[:, a:b] for a, b in zip(bounds, bounds[1:])]


# ---------------------------------------------------------------- tinyds verify

@dataclass
class BuildCheck:
    build: str
    vectors: int
    mismatched_vectors: int
    mismatched_bytes: int
    first: str                # where the first mismatch is, "" if none


@dataclass
class LayerCheck:
    vectors: int
    layers: int
    first: str                # the first layer whose bytes differ, "" if none
    mismatched_bytes: int


def check_layers(qg: Graph, got: list[np.ndarray], x: np.ndarray) -> LayerCheck:
    """Every layer's bytes against the reference's tensor: a wrong byte anywhere in the
    library shows here even when saturation hides it from the final output."""
    want = reference.run_all(qg, x)
    for i, (op, bytes_) in enumerate(zip(qg.ops, got)):
        ref = want[op.outputs[0]].reshape(len(x), -1)
        bytes_ = bytes_.view(ref.dtype)              # a uint8 model output's bytes
        bad = int((bytes_ != ref).sum())
        if bad:
            vec = int(np.flatnonzero((bytes_ != ref).any(axis=1))[0])
            return LayerCheck(len(x), len(qg.ops), f"layer {i} {op.name} ({op.type}): {bad} "
                              f"bytes differ, first in vector {vec}", bad)
    return LayerCheck(len(x), len(qg.ops), "", 0)


@dataclass
class VerifyResult:
    name: str
    vectors: int
    random: int
    calibration: int
    checks: list[BuildCheck]
    target: str               # what the cross-compile for the MCU said
    seconds: float
    edited: list[str] = dataclasses.field(default_factory=list)   # see edited_files
    layers: LayerCheck | None = None
    dtype: str = "int8"       # the model's input elements (int16: a 16x8 model)
    host_flags: list = dataclasses.field(default_factory=list)   # the board's path (host_flags)

    @property
    def mismatches(self) -> int:
        return sum(c.mismatched_vectors for c in self.checks)

    @property
    def ok(self) -> bool:
        return (self.mismatches == 0 and not self.edited
                and (self.layers is None or not self.layers.first))

    def text(self) -> str:
        flags = " ".join(CFLAGS + self.host_flags)
        lines = [f"{self.name}: compiled with {compiler()} {flags}: clean "
                 f"(-O2, and -fsanitize=address,undefined)",
                 self.target,
                 f"vectors: {self.vectors} (3 extremes, {self.calibration} quantized "
                 f"calibration, {self.random} realistic (noisy calibration, normal around the "
                 f"zero point), {self.random} uniformly random {self.dtype})"]
        for c in self.checks:
            where = f"; first: {c.first}" if c.first else ""
            lines.append(f"{c.build}: {c.vectors} vectors run, {c.mismatched_vectors} mismatching "
                         f"({c.mismatched_bytes} bytes){where}")
        if self.layers is not None:
            lines.append(f"layers: {self.layers.layers} layers x {self.layers.vectors} vectors, "
                         + (f"FIRST DIFFERENCE at {self.layers.first}" if self.layers.first
                            else "every byte of every layer equals the reference"))
        lines.append("library source: " + (f"EDITED since generate: {', '.join(self.edited)}"
                                           if self.edited else
                                           "exactly what tinyds generates for the saved model"))
        lines.append(f"mismatches: {self.mismatches} -> {'OK' if self.ok else 'FAILED'} "
                     f"({self.seconds:.1f} s)")
        return "\n".join(lines)


def verify_inputs(qg: Graph, stored, n_random: int, seed: int = 0) -> np.ndarray:
    """The all-minimum / middle / all-maximum extremes (-128 / 0 / 127 for int8 inputs,
    0 / 128 / 255 for uint8, -32768 / 0 / 32767 for int16), stored calibration vectors,
    n_random realistic vectors, then n_random uniform ones (a 16x8 model's noise and
    spreads 256 times wider).

    Uniform int8 saturates most networks, so an off-by-one in a late layer hides behind
    clamped activations; realistic vectors (the calibration inputs with a few LSB of noise,
    and normal values around the input zero point at several spreads) keep every layer in
    its working range. Several inputs: each input's vectors drawn so (the same seed picks
    the same calibration samples for each), packed in rows as the C harness reads them."""
    if len(qg.inputs) > 1:
        parts = reference.unpack(qg, qg.inputs, stored) if stored is not None else \
            [None] * len(qg.inputs)
        return reference.pack([_input_vectors(qg.tensors[n], p, n_random, seed)
                               for n, p in zip(qg.inputs, parts)])
    return _input_vectors(qg.input, stored, n_random, seed)


def _input_vectors(t, stored, n_random: int, seed: int) -> np.ndarray:
    shape = tuple(t.shape[1:])
    dtype = t.dtype
    lo, hi = t.qrange
    rng = np.random.default_rng(seed)
    step = (hi - lo + 1) // 256
    parts = [np.stack([np.full(shape, v, dtype) for v in (lo, (lo + hi + 1) // 2, hi)])]
    n_noisy = 0
    if stored is not None:
        stored = np.asarray(stored, dtype).reshape(-1, *shape)
        parts.append(stored)
        n_noisy = n_random // 2
        base = stored[rng.integers(0, len(stored), n_noisy)].astype(np.int32)
        noise = rng.integers(-3 * step, 3 * step + 1, base.shape)
        parts.append(np.clip(base + noise, lo, hi).astype(dtype))
    sigma = step * rng.choice(REALISTIC_SIGMAS, (n_random - n_noisy, *[1] * len(shape)))
    normal = t.qparams[1] + sigma * rng.standard_normal((n_random - n_noisy, *shape))
    parts.append(np.clip(np.rint(normal), lo, hi).astype(dtype))
    parts.append(rng.integers(lo, hi + 1, (n_random, *shape)).astype(dtype))
    return np.concatenate(parts)


def reference_outputs(qg: Graph, x: np.ndarray) -> np.ndarray:
    """Every output's bytes per vector, in g.outputs order (as the harness writes them)."""
    starts = range(0, len(x), REFERENCE_CHUNK)
    return np.concatenate([reference.run_packed(qg, x[i:i + REFERENCE_CHUNK]) for i in progress.bar(
            starts, f"NumPy reference, {len(x)} vectors", len(starts), "chunk")])


def input_size(qg: Graph) -> int:
    """Bytes of one vector: every input's."""
    return sum(qg.tensors[n].size for n in qg.inputs)


def output_size(qg: Graph) -> int:
    """Bytes of one output record: every output's."""
    return sum(qg.tensors[n].size for n in qg.outputs)


def check(build: str, got: np.ndarray, want: np.ndarray) -> BuildCheck:
    want = want[:len(got)]
    bad = got != want
    rows = np.flatnonzero(bad.any(axis=1))
    first = ""
    if len(rows):
        i = int(rows[0])
        j = int(np.flatnonzero(bad[i])[0])
        first = f"vector {i} byte {j}: {build} {int(got[i, j])}, reference {int(want[i, j])}"
    return BuildCheck(build, len(got), len(rows), int(bad.sum()), first)


@dataclass
class Output:
    """A folder written by `tinyds generate`, as the verifiers need it."""
    dir: Path
    name: str
    target: Target                # the board tinyds.json names
    qg: Graph
    stored: np.ndarray | None     # the quantized calibration vectors, if generate had any
    optimize: str                 # generate's --optimize, model source and labels, to render
    source: str                   # it again
    labels: list

    @property
    def lib_dir(self) -> Path:
        return self.dir / "lib" / self.name


def load_meta(out_dir) -> dict:
    """tinyds.json of a generated folder, or one clear error."""
    out = Path(out_dir)
    if not is_marker(out / MARKER):
        raise TinydsError(f"{out}: not a tinyds output folder (no readable {MARKER} written by "
                          f"tinyds); run tinyds generate MODEL -o {out} first")
    return json.loads((out / MARKER).read_text())


def load_output(out_dir) -> Output:
    """A generated folder, every part checked: its name becomes file names and compiler
    arguments, its vectors are reshaped to the model input."""
    from .names import check_name
    out = Path(out_dir)
    meta = load_meta(out)
    try:
        name, target = check_name(meta["name"]), targets.get(meta["mcu"])
        optimize, source = meta.get("optimize", "speed"), meta.get("source", "")
        labels = meta.get("labels", [])
        if optimize not in ("speed", "size") or not isinstance(source, str):
            raise TinydsError(f"optimize {optimize!r} or source {source!r} is not valid")
        if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
            raise TinydsError("labels is not a list of strings")
    except TinydsError as e:
        raise TinydsError(f"{out / MARKER}: damaged ({e}); run tinyds generate again") from None
    if meta.get("lib_only"):
        raise TinydsError(f"{out}: generated with --lib-only, so it has no {BUNDLE}/ data to "
                          "verify against; run tinyds generate without --lib-only")
    bundle = out / BUNDLE
    qg = load_graph(bundle)
    vectors = bundle / "vectors.npy"
    try:
        stored = np.load(vectors, allow_pickle=False) if vectors.exists() else None
        if stored is not None and (stored.dtype != np.dtype(qg.input.dtype) or stored.size == 0
                                   or stored.size % input_size(qg)):
            raise ValueError(f"{stored.dtype} {stored.shape} is not a batch of "
                             f"{qg.input.dtype} model inputs")
        kept = 0 if stored is None else stored.size // input_size(qg)
        if kept != meta.get("vectors", kept):
            raise ValueError(f"{kept} vectors, {MARKER} says {meta['vectors']}")
    except (OSError, ValueError, EOFError) as e:
        raise TinydsError(f"{vectors}: damaged ({e}); run tinyds generate again") from None
    return Output(out, name, target, qg, stored, optimize, source, labels)


def edited_files(o: Output) -> list[str]:
    """Library files that differ from what tinyds renders for the saved model. Vectors alone
    cannot catch every edit: one unit of a late layer's int32 bias is often a ten-thousandth
    of an output step, so it changes an output byte on almost no input."""
    from .codegen import render_for_mcu
    files, _ = render_for_mcu(o.qg, o.name, o.target, o.optimize, o.source, o.labels)
    return [f for f, text in files.items()
            if not (o.lib_dir / f).is_file() or (o.lib_dir / f).read_text() != text]


def verify(out_dir, n_random: int = RANDOM_VECTORS, seed: int = 0) -> VerifyResult:
    """Compile out_dir's library (-O2, sanitizers, layer dump), run every vector, compare every
    output byte and, on the first LAYER_VECTORS, every layer's bytes with the reference."""
    t0 = time.perf_counter()
    o = load_output(out_dir)
    name, qg, stored, lib_dir = o.name, o.qg, o.stored, o.lib_dir
    x = verify_inputs(qg, stored, n_random, seed)
    subset = {"release": x, "sanitize": x[:SANITIZE_VECTORS]}
    sizes = [qg.tensors[op.outputs[0]].size for op in qg.ops]

    def build_and_run(b: str) -> np.ndarray:
        return run_host(compile_host(lib_dir, name, Path(tmp) / b, b, o.target), subset[b],
                        output_size(qg), out_dtype=qg.output.dtype)

    def layers_run() -> list[np.ndarray]:
        exe = compile_host(lib_dir, name, Path(tmp) / "layers", "layers", o.target)
        return run_host(exe, x[:LAYER_VECTORS], output_size(qg), sizes, qg.output.dtype)[1]

    with tempfile.TemporaryDirectory(prefix="tinyds-verify-") as tmp, ThreadPoolExecutor(3) as pool:
        runs = {b: pool.submit(build_and_run, b) for b in OUTPUT_BUILDS}
        per_layer = pool.submit(layers_run)
        cross = pool.submit(compile_target, lib_dir, name, o.target, Path(tmp))
        want = reference_outputs(qg, x)          # meanwhile, in this thread
        edited = edited_files(o)
        with progress.bar(desc="C builds and runs", total=4, unit="build") as bar:
            for f in as_completed([*runs.values(), per_layer, cross]):
                f.result()
                bar.update()
        checks = [check(b, f.result(), want) for b, f in runs.items()]
        layers = check_layers(qg, per_layer.result(), x[:LAYER_VECTORS])
        target = cross.result()
    n_cal = 0 if stored is None else len(stored)
    return VerifyResult(name, len(x), n_random, n_cal, checks, target, time.perf_counter() - t0,
                        edited, layers, qg.input.dtype, host_flags(o.target))
