"""Kernel choice per layer (tinyds.kernels) on whole models: fast and portable
kernels side by side bit-exact, --optimize size and the flash fallback, and the
generated library warning-free under every compiler and core the issue names."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyds import codegen, reference, targets
from tinyds.kernels import KernelOptions

sys.path.insert(0, str(Path(__file__).parent))
from oputil import run_c  # noqa: E402
from test_tflite_import import small_graph  # noqa: E402

DSP = KernelOptions(dsp=True)
NEWLIB = Path("/usr/lib/arm-none-eabi/include")


def _inputs(g, n=64, seed=3):
    return np.random.default_rng(seed).integers(-128, 128, (n, *g.input.shape[1:])).astype(np.int8)


def test_model_with_fast_and_portable_layers_is_bit_exact():
    """small_graph mixes layers the fast kernels take (conv with padding through
    im2col, pointwise) with ones they do not (depthwise multiplier 2, add, pools)."""
    g = small_graph()
    _, lib = codegen.render_library(g, "m", target=DSP)
    kinds = {op.name: k.template for op, k in zip(g.ops, lib.kernels) if k is not None}
    assert kinds["conv"] == "conv2d_dsp" and kinds["pw_a"] == "conv2d_dsp"
    assert kinds["dw"] == "depthwise_conv2d"           # multiplier 2: portable
    x = _inputs(g)
    np.testing.assert_array_equal(run_c(g, x, target=DSP).reshape(len(x), -1),
                                  reference.run(g, x).reshape(len(x), -1))


def test_optimize_size_and_flash_fallback(monkeypatch):
    """--optimize size keeps int8 weights everywhere; under speed, layers fall back
    to int8 (largest int16 stream first) only until the model fits the flash."""
    g = small_graph()
    _, speed = codegen.render_for_mcu(g, "m", targets.get("stm32f4"))
    _, size = codegen.render_for_mcu(g, "m", targets.get("stm32f4"), optimize="size")
    fast = [i for i, k in enumerate(speed.kernels) if k is not None and k.int16_weights]
    assert len(fast) >= 3 and not any(k is not None and k.int16_weights for k in size.kernels)
    assert size.weight_bytes < speed.weight_bytes
    streams = {i: len(speed.kernels[i].params["stream"]) for i in fast}
    biggest = max(streams, key=streams.get)
    # a flash that holds everything but the biggest int16 stream's extra bytes
    need = codegen.flash_need(speed) + targets.RUNTIME_FLASH_BYTES
    tight = dataclasses.replace(targets.get("stm32f4"), flash=need - 1)
    _, fell = codegen.render_for_mcu(g, "m", tight)
    still = [i for i, k in enumerate(fell.kernels) if k is not None and k.int16_weights]
    assert biggest not in still and len(still) == len(fast) - 1
    assert "portable" in codegen.kernel_report(g, fell).splitlines()[biggest]
    x = _inputs(g, 16)
    np.testing.assert_array_equal(run_c(g, x, target=KernelOptions(True, "speed", frozenset([biggest]))),
                                  reference.run(g, x))


def _compilers():
    """(label, command prefix) for every compiler/core/-O the issue asks to be clean."""
    gcc = shutil.which("arm-none-eabi-gcc")
    clang = shutil.which("clang")
    out = []
    for core, flags in [("m0plus", ["-mcpu=cortex-m0plus", "-mthumb"]),
                        ("m4", ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                                "-mfpu=fpv4-sp-d16"]),
                        ("m7", ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard",
                                "-mfpu=fpv5-sp-d16"])]:
        for opt in ("-O2", "-Os", "-Og", "-O0"):
            out.append((f"gcc-{core}{opt}", [gcc, *flags, opt] if gcc else None))
    for target, extra in [("thumbv7em-none-eabihf", ["-mcpu=cortex-m4"]),
                          ("thumbv7em-none-eabihf", ["-mcpu=cortex-m7"]),
                          ("thumbv6m-none-eabi", [])]:
        for opt in ("-O2", "-Os"):
            cmd = [clang, f"--target={target}", *extra, "-isystem", str(NEWLIB), opt]
            out.append((f"clang-{target}{''.join(extra)}{opt}",
                        cmd if clang and NEWLIB.is_dir() else None))
    out.append(("host-gcc-O2", ["gcc", "-O2"]))
    return out


@pytest.mark.parametrize("target", [DSP, KernelOptions()], ids=["fast", "portable"])
@pytest.mark.parametrize("label,cmd", _compilers(), ids=[c[0] for c in _compilers()])
def test_library_compiles_warning_free(tmp_path, label, cmd, target):
    if cmd is None:
        pytest.skip(f"SKIPPED: {label}: compiler not installed (apt-get install clang "
                    "gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    files, _ = codegen.render_library(small_graph(), "m", target=target)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    res = subprocess.run([*cmd, "-std=c99", "-Wall", "-Wextra", "-Werror", "-c",
                          str(tmp_path / "m.c"), "-I", str(tmp_path), "-o", str(tmp_path / "m.o")],
                         capture_output=True, text=True)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr[:3000]


def test_kws_kernel_code_fits_8_kb(tmp_path):
    """Issue 7's budget: all of the KWS library's code (layer functions, shared GEMM
    cores, NAME_run), Cortex-M4 -O2, in at most 8 KB of .text."""
    from elftools.elf.elffile import ELFFile
    from tinyds.frontends.tflite import load_tflite
    path = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny" / "kws_ref_model.tflite"
    if not path.exists():
        pytest.skip(f"SKIPPED LOUDLY: {path} missing (../shared holds the MLPerf Tiny models)")
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("SKIPPED: arm-none-eabi-gcc not installed")
    files, _ = codegen.render_for_mcu(load_tflite(path), "kws", targets.get("stm32f4"))
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    obj = tmp_path / "kws.o"
    subprocess.run(["arm-none-eabi-gcc", *targets.get("stm32f4").cflags, "-std=c99", "-O2",
                    "-c", str(tmp_path / "kws.c"), "-I", str(tmp_path), "-o", str(obj)], check=True)
    with open(obj, "rb") as f:
        text = sum(s["sh_size"] for s in ELFFile(f).iter_sections() if s.name.startswith(".text"))
    assert 2000 < text <= 8 * 1024, text


def test_gemm_unroll_agrees_with_the_assembly_core():
    """conv2d.py picks the one-pass "fast" core for layers of at most GEMM_UNROLL
    steps; the assembly body unrolls TINYDS_GEMM_UNROLL steps: they must agree,
    or a longer layer would skip its second pass."""
    from tinyds.ops import conv2d
    header = (Path(codegen.__file__).resolve().parents[1] / "templates" / "tinyds_dsp.h").read_text()
    assert re.search(r"#define TINYDS_GEMM_UNROLL (\d+)", header).group(1) == str(conv2d.GEMM_UNROLL)
