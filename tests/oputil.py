"""Run a quantized graph's generated C on the host, for bit-exact tests.

`run_c(qg, x)` renders the C library (portable kernels, or those `target` picks), compiles it with the verify harness
(-Wall -Wextra -Werror, once optimised and once under ASan+UBSan), streams the
whole batch through one process per build and returns the outputs shaped like
`tinyds.reference.run`. Builds are cached by a hash of the generated sources,
so re-running a test only pays for compilation when the C changed.
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
