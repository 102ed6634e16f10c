"""Run a quantized graph's generated C on the host, for bit-exact tests.

`run_c(qg, x)` renders the C library (portable kernels, or those `target` picks), compiles it with the verify harness
(-Wall -Wextra -Werror, once optimised and once under ASan+UBSan), streams the
whole batch through one process per build and returns the outputs shaped like
`tinyds.reference.run`. Builds are cached by a hash of the generated sources,
so re-running a test only pays for compilation when the C changed.

`qemu_cases(mcu)` marks a function returning [(graph, inputs)] as a QEMU case set; the
`qemu_sweep` fixture (conftest.py) runs every set registered for a core, from every
test file, in one firmware and one QEMU boot per core (`run_qemu_cases`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tinyds import codegen, verify
from tinyds.kernels import KernelOptions

CACHE = Path(tempfile.gettempdir()) / f"tinyds-oputil-{os.getuid()}"
NAME = "t"


def _key(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    cc = subprocess.run([verify.compiler(), "--version"], capture_output=True, text=True).stdout
    for part in [cc, repr(verify.CFLAGS), repr(verify.BUILDS), codegen.harness_source(NAME),
                 *(f"{k}\0{v}" for k, v in sorted(files.items()))]:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def build_c(qg, sanitize: bool = True, target: KernelOptions = KernelOptions()) -> dict[str, Path]:
    """Compile qg's C (cached) with the kernels generate picks for `target`;
    returns {build: executable}."""
    files, _ = codegen.render_library(qg, NAME, target=target)
    builds = ["release", "sanitize"] if sanitize else ["release"]
    d = CACHE / _key(files)
    if not all((d / f"{NAME}_{b}").exists() for b in builds):
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="build-"))
        try:
            for fname, text in files.items():
                (tmp / fname).write_text(text)
            for b in builds:
                verify.compile_host(tmp, NAME, tmp, b)
            if d.exists():           # a build without the sanitizer, or a racing test process
                shutil.rmtree(d, ignore_errors=True)
            try:
                os.replace(tmp, d)
            except OSError:          # another process just put the same build there
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {b: d / f"{NAME}_{b}" for b in builds}


def run_c(qg, x_int8_batch: np.ndarray, sanitize: bool = True,
          target: KernelOptions = KernelOptions()) -> np.ndarray:
    """Generated C output for a batch (N, *input_shape[1:]) of the model's input type (int8,
    uint8, or int16 for a 16x8 graph), shaped (N, *output_shape[1:])."""
    x = np.asarray(x_int8_batch)
    assert x.dtype == np.dtype(qg.input.dtype), x.dtype
    assert x.shape[1:] == tuple(qg.input.shape[1:]), (x.shape, qg.input.shape)
    outs = {b: verify.run_host(exe, x, qg.output.size, out_dtype=qg.output.dtype)
            for b, exe in build_c(qg, sanitize, target).items()}
    y = outs["release"]
    if sanitize:
        np.testing.assert_array_equal(outs["sanitize"], y, err_msg="-O2 and sanitizer builds differ")
    return y.reshape((x.shape[0], *qg.output.shape[1:]))


def tflm(qg, x_int8_batch):
    """TensorFlow Lite Micro on qg's export-tflite, one input at a time: the referee.
    Several inputs or outputs: see tflm_model."""
    from tinyds.export_tflite import export_tflite
    return tflm_model(export_tflite(qg), x_int8_batch)


def tflm_model(tflite: bytes, x_int8_batch):
    """TensorFlow Lite Micro on a .tflite's bytes, one input at a time. A model with several
    inputs takes a list of batches (one per input, in the model's order); one with several
    outputs gives a list of batches (one per output)."""
    from tflite_micro.python.tflite_micro import runtime
    it = runtime.Interpreter.from_bytes(tflite, arena_size=1 << 18)
    xs = x_int8_batch if isinstance(x_int8_batch, (list, tuple)) else [x_int8_batch]
    outs = None
    for n in range(len(xs[0])):
        for i, x in enumerate(xs):
            it.set_input(x[n:n + 1], i)
        it.invoke()
        if outs is None:
            outs = [[] for _ in range(_count(it.get_output_details))]
        for j, o in enumerate(outs):
            o.append(it.get_output(j)[0])
    stacked = [np.stack(o) for o in outs]
    return stacked[0] if len(stacked) == 1 else stacked


def _count(details) -> int:
    """How many inputs or outputs a TFLM interpreter has (its details raise past the last)."""
    n = 0
    while True:
        try:
            details(n)
        except (RuntimeError, ValueError, IndexError):
            return n
        n += 1


# ---- many single-I/O graphs in one firmware, one QEMU boot

RUNNER = """\
/* Every case's library on the same vectors stream: per case, COUNT vectors of
 * IN bytes in, OUT bytes out, all through one shared arena. */
#include "tinyds_board.h"
{includes}

static union {{ int32_t align; {arenas} }} arena;
static union {{ int32_t align; int8_t bytes[{in_max}]; }} input;
static union {{ int32_t align; int8_t bytes[{out_max}]; }} output;

{wrappers}

static const struct {{ int (*run)(void); uint32_t in, out, count; }} cases[] = {{
{table}
}};

int main(void)
{{
    tinyds_board_init();
    int in = tinyds_sh_open("vectors.bin", 1);
    int out = tinyds_sh_open("outputs.bin", 5);
    if (in < 0 || out < 0) {{
        tinyds_puts("tinyds: cannot open vectors.bin / outputs.bin\\n");
        return 2;
    }}
    uint32_t n = 0;
    for (uint32_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {{
        for (uint32_t v = 0; v < cases[c].count; v++) {{
            if (tinyds_sh_read(in, input.bytes, cases[c].in) != (int)cases[c].in
                || cases[c].run() != 0
                || tinyds_sh_write(out, output.bytes, cases[c].out) != 0) {{
                tinyds_puts("tinyds: run or write failed\\n");
                return 1;
            }}
            n++;
        }}
    }}
    tinyds_sh_close(in);
    tinyds_sh_close(out);
    tinyds_puts("tinyds: vectors ");
    tinyds_put_u32(n);
    tinyds_puts("\\n");
    return 0;
}}
"""


def _runner_source(cases) -> str:
    names = [f"c{i}" for i in range(len(cases))]
    wrappers = [f"static int run_{n}(void) {{ return {n}_run_with_arena(arena.bytes{i}, "
                f"(const {n}_input_t *)(const void *)input.bytes, "
                f"({n}_output_t *)(void *)output.bytes); }}"
                for i, n in enumerate(names)]
    table = [f"    {{run_{n}, {g.input.nbytes}, {g.output.nbytes}, {len(x)}}},"
             for n, (g, x) in zip(names, cases)]
    return RUNNER.format(
        includes="\n".join(f'#include "{n}.h"' for n in names),
        arenas=" ".join(f"int8_t bytes{i}[{n.upper()}_ARENA_SIZE + 4];"
                        for i, n in enumerate(names)),
        in_max=max(g.input.nbytes for g, _ in cases),
        out_max=max(g.output.nbytes for g, _ in cases),
        wrappers="\n".join(wrappers), table="\n".join(table))


HOST_RUNNER = """\
/* Every case's library on stdin's vectors, in order; outputs to stdout. Each library
 * runs over its own static arena, and each vector sits in a buffer of exactly its
 * size, so the sanitizer sees any access past either. */
#include <stdio.h>
#include <stdlib.h>
{includes}

{wrappers}

static const struct {{ int (*run)(const void *, void *); size_t in, out, count; }} cases[] = {{
{table}
}};

int main(void)
{{
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {{
        for (size_t v = 0; v < cases[c].count; v++) {{
            void *in = malloc(cases[c].in), *out = malloc(cases[c].out);
            if (!in || !out || fread(in, 1, cases[c].in, stdin) != cases[c].in
                || cases[c].run(in, out) != 0
                || fwrite(out, 1, cases[c].out, stdout) != cases[c].out) {{
                return 1;
            }}
            free(in);
            free(out);
        }}
    }}
    return 0;
}}
"""


def _host_runner_source(cases) -> str:
    names = [f"c{i}" for i in range(len(cases))]
    return HOST_RUNNER.format(
        includes="\n".join(f'#include "{n}.h"' for n in names),
        wrappers="\n".join(f"static int run_{n}(const void *in, void *out) {{ return {n}_run("
                           f"(const {n}_input_t *)in, ({n}_output_t *)out); }}" for n in names),
        table="\n".join(f"    {{run_{n}, {g.input.nbytes}, {g.output.nbytes}, {len(x)}}},"
                        for n, (g, x) in zip(names, cases)))


def run_c_cases(cases, target: KernelOptions = KernelOptions(), sanitize: bool = True) -> list[np.ndarray]:
    """run_c for many single-input single-output graphs at once: every case's library
    (c0, c1, ...) in one host program per build (-O2, and ASan+UBSan, which must agree),
    cached like build_c. Returns each case's outputs shaped (N, *output_shape[1:])."""
    files = {}
    for i, (g, _) in enumerate(cases):
        assert len(g.inputs) == len(g.outputs) == 1, g.name
        files.update(codegen.render_library(g, f"c{i}", target=target)[0])
    files["runner.c"] = _host_runner_source(cases)
    builds = ["release", "sanitize"] if sanitize else ["release"]
    d = CACHE / ("many-" + _key(files))
    if not all((d / b).exists() for b in builds):
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="build-"))
        try:
            for fname, text in files.items():
                (tmp / fname).write_text(text)
            sources = sorted(str(f) for f in tmp.glob("*.c"))
            for b in builds:
                res = subprocess.run([verify.compiler(), *verify.CFLAGS, *verify.BUILDS[b],
                                      "-I", str(tmp), *sources, "-o", str(tmp / b)],
                                     capture_output=True, text=True)
                assert res.returncode == 0, res.stderr[:4000]
            shutil.rmtree(d, ignore_errors=True)
            try:
                os.replace(tmp, d)
            except OSError:          # another process just put the same build there
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    stdin = b"".join(np.ascontiguousarray(x, g.input.dtype).tobytes() for g, x in cases)
    raw = {}
    for b in builds:
        res = subprocess.run([str(d / b)], input=stdin, capture_output=True,
                             env={**os.environ, **verify.SANITIZER_ENV})
        assert res.returncode == 0, res.stderr.decode()[:4000]
        raw[b] = res.stdout
    if sanitize:
        assert raw["sanitize"] == raw["release"], "-O2 and sanitizer builds differ"
    return _split(cases, raw["release"])


def _split(cases, raw: bytes) -> list[np.ndarray]:
    """Every case's outputs, in order, out of their concatenated bytes."""
    outs, pos = [], 0
    for g, x in cases:
        size = len(x) * g.output.nbytes
        outs.append(np.frombuffer(raw[pos:pos + size], g.output.dtype)
                    .reshape(len(x), *g.output.shape[1:]))
        pos += size
    assert pos == len(raw)
    return outs


def _qemu_chunk(part, m, target: KernelOptions) -> bytes:
    """One firmware for `part`'s libraries, one QEMU boot: every output's bytes in order."""
    from tinyds.codegen import generate_library
    from tinyds.firmware import build_elf, run_qemu
    with tempfile.TemporaryDirectory(prefix="tinyds-sweep-") as tmp:
        work = Path(tmp)
        for i, (g, _) in enumerate(part):
            assert len(g.inputs) == len(g.outputs) == 1, g.name
            generate_library(g, work / "lib", f"c{i}", target=target)
        (work / "runner.c").write_text(_runner_source(part))
        elf = build_elf(work / "build", work / "lib", "c0", m, work / "runner.c",
                        machine=m.machine, defines=("TINYDS_CONSOLE_SEMIHOSTING",))
        (work / "build" / "vectors.bin").write_bytes(b"".join(
            np.ascontiguousarray(x, g.input.dtype).tobytes() for g, x in part))
        printed = run_qemu(elf, m.machine.name, work / "build")
        assert f"tinyds: vectors {sum(len(x) for _, x in part)}" in printed, printed
        return (work / "build" / "outputs.bin").read_bytes()


def in_parallel(jobs: dict) -> dict:
    """{key: fn} -> {key: get}, every fn run on a pool of one thread per host core (for jobs
    that wait on QEMU or a compiler); get() returns fn's result or raises its exception."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {key: pool.submit(fn) for key, fn in jobs.items()}
    return {key: f.result for key, f in futures.items()}


def run_qemu_cases(cases, mcu: str, target: KernelOptions | None = None,
                   chunk: int = 40) -> list[np.ndarray]:
    """cases: [(single-input single-output graph, input batch)]; every case's library, with
    the kernels generate picks for `mcu` (or `target`'s), cross-built for mcu's core and run
    in QEMU. Up to `chunk` libraries share one firmware and one boot; the firmwares (at
    least two when there are two cases) build side by side, one per host core. Returns
    each case's outputs shaped (N, *output_shape[1:])."""
    from tinyds import targets
    m = targets.get(mcu)
    target = target or KernelOptions.for_target(m)
    n = max(min(2, len(cases)), -(-len(cases) // chunk))
    parts = [cases[i * len(cases) // n:(i + 1) * len(cases) // n] for i in range(n)]
    runs = in_parallel({i: lambda part=part: _qemu_chunk(part, m, target)
                        for i, part in enumerate(parts)})
    return [y for i, part in enumerate(parts) for y in _split(part, runs[i]())]


QEMU_CASES: dict[str, list] = {}      # mcu -> the case-set functions registered for it


def qemu_cases(mcu: str):
    """Decorator: the function (no arguments, returns [(graph, inputs)]) is a case set for
    mcu's QEMU sweep; a test gets its outputs from the `qemu_sweep` fixture."""
    def register(fn):
        fn.mcu = mcu
        QEMU_CASES.setdefault(mcu, []).append(fn)
        return fn
    return register
