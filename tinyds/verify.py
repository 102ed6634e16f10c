"""Host check of a generated library: compile it warning-free, run a batch of
vectors through it (also under AddressSanitizer and UBSan) and compare every
output byte with the NumPy reference, which is the spec.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .codegen import harness_source
from .errors import TinydsError

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
BUILDS = {
    "release": ["-O2"],
    "sanitize": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all"],
}
# Leak checking needs ptrace, which containers often forbid; the harness frees what it allocates.
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
                 "UBSAN_OPTIONS": "print_stacktrace=1"}


def compiler() -> str:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise TinydsError(f"{cc}: host C compiler not found; install gcc or set CC")
    return cc


def build_command(lib_dir: Path, name: str, harness: Path, exe: Path, build: str) -> list[str]:
    return [compiler(), *CFLAGS, *BUILDS[build], "-I", str(lib_dir), str(harness),
            str(lib_dir / f"{name}.c"), "-o", str(exe)]


def compile_host(lib_dir, name: str, build_dir, build: str = "release") -> Path:
    """Compile the library in lib_dir with the harness into build_dir; returns the executable."""
    lib_dir, build_dir = Path(lib_dir), Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    harness = build_dir / "harness.c"
    harness.write_text(harness_source(name))
    exe = build_dir / f"{name}_{build}"
    cmd = build_command(lib_dir, name, harness, exe, build)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        first = next((ln for ln in res.stderr.splitlines() if "error" in ln), res.stderr.strip())
        raise TinydsError(f"{lib_dir / (name + '.c')}: host compile ({build}) failed: {first}")
    return exe


def run_host(exe, x: np.ndarray, output_size: int) -> np.ndarray:
    """Stream the batch x (N, ...) int8 through exe; returns (N, output_size) int8."""
    x = np.ascontiguousarray(x, dtype=np.int8)
    with tempfile.TemporaryDirectory(prefix="tinyds-run-") as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        src.write_bytes(x.tobytes())
        res = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True,
                             env={**os.environ, **SANITIZER_ENV})
        if res.returncode != 0:
            lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
            summary = next((ln for ln in lines if "SUMMARY" in ln or "runtime error" in ln),
                           lines[0] if lines else f"exit code {res.returncode}")
            raise TinydsError(f"{exe}: generated C failed at run time: {summary}")
        y = np.frombuffer(dst.read_bytes(), dtype=np.int8)
    n = x.shape[0]
    if y.size != n * output_size:
        raise TinydsError(f"{exe}: produced {y.size} bytes for {n} vectors of {output_size}")
    return y.reshape(n, output_size)
