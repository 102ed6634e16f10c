"""Cross-built firmware on emulated Cortex-M: bit-exact vectors through
semihosting on every QEMU core, TIM2 instruction counting, and the bench's
sizes against arm-none-eabi-size."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from oputil import in_parallel
from test_project import toy_library, toy_project, toy_ref
from tinyds import bench, bundle, targets
from tinyds.firmware import FIRMWARE_DIR, build_elf, run_qemu, run_vectors

pytestmark = pytest.mark.slow

CORES = ["stm32f4", "cortex-m4", "cortex-m7", "cortex-m3", "cortex-m0plus"]


@pytest.mark.parametrize("mcu", CORES)
def test_stand_in_library_bit_exact_on_each_qemu_core(tmp_path, mcu):
    x = np.random.default_rng(7).integers(-128, 128, (300, 64), dtype=np.int8)
    x[0] = -128
    x[1] = 127
    y = run_vectors(toy_library(tmp_path / "toy"), "toy", targets.get(mcu), x, 8)
    np.testing.assert_array_equal(y, toy_ref(x))


def test_m0plus_build_is_thumb1_only(tmp_path):
    """The M0+ firmware that runs on the M3 machine really is ARMv6-M code."""
    elf = build_elf(tmp_path, toy_library(tmp_path / "toy"), "toy", targets.get("cortex-m0plus"),
                    FIRMWARE_DIR / "vector_runner.c", defines=("TINYDS_CONSOLE_SEMIHOSTING",))
    attrs = subprocess.run(["arm-none-eabi-readelf", "-A", str(elf)], capture_output=True,
                           text=True).stdout
    assert "Tag_CPU_arch: v6S-M" in attrs or "Tag_CPU_arch: v6-M" in attrs, attrs


def _layer_counts(tmp_path: Path, nops: int) -> dict[str, int]:
    lib = toy_library(tmp_path / f"lib{nops}", nops=nops)
    out = tmp_path / f"out{nops}"
    toy_project(out, "stm32f4")
    main = out / "src" / "main.c"
    elf = build_elf(tmp_path / f"b{nops}", lib, "toy", targets.get("stm32f4"), main,
                    machine=targets.MACHINES["netduinoplus2"],
                    defines=("TINYDS_PROFILE", "TINYDS_COUNTER_TIM2", "TINYDS_CONSOLE_SEMIHOSTING"))
    text = run_qemu(elf, "netduinoplus2", tmp_path, icount=True)
    assert "sample match" in text
    return {n: int(c) for n, c in re.findall(r"^layer \d+ (\w+) instructions (\d+)", text, re.M)}


def test_tim2_under_icount_counts_exactly_one_per_instruction(tmp_path):
    base = _layer_counts(tmp_path, 0)
    more = _layer_counts(tmp_path, 1000)
    assert more["nops"] - base["nops"] == 1000
    assert more["negate"] == base["negate"] and more["mean8"] == base["mean8"]
    assert 0 < base["nops"] < 40                     # just the profiling hook
    assert base == _layer_counts(tmp_path, 0)        # deterministic


def test_bench_sizes_agree_with_arm_none_eabi_size(tmp_path):
    toy_project(tmp_path, "stm32f4")
    b = bench.measure(tmp_path)
    assert b.sample_ok and b.model == "toy" and b.target.name == "stm32f4"
    assert [layer.name for layer in b.layers] == ["negate", "nops", "mean8"]
    assert b.total_instructions >= sum(layer.instructions for layer in b.layers)
    assert b.arena == 64
    assert 0 < b.stack < targets.STACK_BYTES
    # Rebuild the same ELF and ask binutils for the Berkeley sizes.
    elf = build_elf(tmp_path / "b", tmp_path / "lib" / "toy", "toy", targets.get("stm32f4"),
                    tmp_path / "src" / "main.c", machine=targets.MACHINES["netduinoplus2"],
                    defines=("TINYDS_PROFILE", "TINYDS_COUNTER_TIM2", "TINYDS_CONSOLE_SEMIHOSTING"))
    text, data, bss = map(int, subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True,
                                              text=True).stdout.splitlines()[1].split()[:3])
    assert b.flash == text + data
    assert b.sections[".bss"] == bss and b.model_bytes[".text"] > 0
    # RAM as an application needs it: the library's statics, its input and output, the stack.
    assert (b.library_ram, b.input_bytes, b.output_bytes) == (b.arena, 64, 8)
    assert b.ram == b.arena + 64 + 8 + b.stack
    report = bench.report(b)
    assert "total (one inference)" in report
    assert (f"RAM: {b.ram} B of {128 * 1024} = library static {b.arena} (arena {b.arena}) + input "
            f"buffer 64 + output buffer 8 + stack high-water {b.stack}") in report


# ---- real generated models: the MLPerf Tiny int8 KWS DS-CNN and VWW MobileNetV1-0.25

# Hand count for the DS-CNN: conv 10x4x1->64 on 25x5, 4 x (dw 3x3x64 + pw 64->64) on 25x5, FC 64->12.
KWS_MACS = 25 * 5 * 64 * 40 + 4 * (25 * 5 * 64 * 9 + 25 * 5 * 64 * 64) + 64 * 12


@pytest.fixture(scope="module")
def kws_out(mlperf_out):
    return mlperf_out("kws_ref_model", "stm32f4", sample=True)


@pytest.fixture(scope="module")
def vww_out(mlperf_out):
    return mlperf_out("vww_96_int8", "stm32f4")


@pytest.fixture(scope="module")
def kws_m0_out(mlperf_out):
    """Generated for Cortex-M0+: the portable kernels, not the fast ones' C twins."""
    return mlperf_out("kws_ref_model", "cortex-m0plus", sample=True)


# Every verify_qemu run of the models below, keyed (model, mcu): (out fixture, n_random).
KWS_CORES = ["stm32f4", "cortex-m0plus", "cortex-m3", "cortex-m7"]
RUNS = {**{("kws", mcu): ("kws_out", 200) for mcu in KWS_CORES},
        **{("kws_m0", mcu): ("kws_m0_out", 200) for mcu in ("cortex-m0plus", "cortex-m3")},
        **{("vww", mcu): ("vww_out", 20) for mcu in ("stm32f4", "cortex-m0plus")},
        **{(name, mcu): ("torch_outs", n) for name, n in (("dscnn", 200), ("mobilenet_v2", 20))
           for mcu in ("stm32f4", "cortex-m0plus")}}


@pytest.fixture(scope="module")
def qemu_runs(request):
    """verify_qemu's result for every entry of RUNS, run side by side (one QEMU per host
    core: each run is a firmware build and a boot that count for minutes together)."""
    from tinyds.firmware import verify_qemu

    def job(key, fixture, n_random):
        out = request.getfixturevalue(fixture)
        out = out[key[0]] if fixture == "torch_outs" else out
        return lambda: verify_qemu(out, n_random=n_random, target=targets.get(key[1]))
    return in_parallel({key: job(key, *spec) for key, spec in RUNS.items()})


@pytest.mark.parametrize("mcu", KWS_CORES)
def test_kws_bit_exact_in_qemu(qemu_runs, mcu):
    """The stm32f4 library (fast kernels: their assembly on M4/M7, their C twins on
    M0+/M3) on every core."""
    r = qemu_runs[("kws", mcu)]()
    print(r.text())
    assert r.vectors == 3 + 1 + 2 * 200 and r.mismatched_vectors == 0, r.text()   # + realistic


@pytest.mark.parametrize("mcu", ["cortex-m0plus", "cortex-m3"])
def test_kws_portable_bit_exact_in_qemu(qemu_runs, mcu):
    r = qemu_runs[("kws_m0", mcu)]()
    print(r.text())
    assert r.vectors == 3 + 1 + 2 * 200 and r.mismatched_vectors == 0, r.text()   # + realistic


@pytest.mark.parametrize("mcu", ["stm32f4", "cortex-m0plus"])
def test_mobilenet_bit_exact_in_qemu(qemu_runs, mcu):
    r = qemu_runs[("vww", mcu)]()
    print(r.text())
    assert r.vectors == 3 + 2 * 20 and r.mismatched_vectors == 0, r.text()


def test_kws_bench(kws_out):
    text = bench.bench(kws_out)
    print(text)
    b = bench.measure(kws_out, graph=bundle.load_graph(kws_out / bundle.BUNDLE))
    weighted = ("conv2d", "depthwise_conv2d", "fully_connected")
    assert b.sample_ok and sum(la.macs for la in b.layers if la.op in weighted) == KWS_MACS
    assert [layer.op for layer in b.layers][:3] == ["conv2d", "depthwise_conv2d", "conv2d"]
    assert all(layer.instructions > layer.macs // 4 for layer in b.layers)
    assert b.flash < 512 * 1024 and b.ram < 128 * 1024
    assert b.model_bytes[".rodata"] > 20000          # ~23k int8 weights live in flash


# ---- the PyTorch path: zoo models through tinyds.convert, then into QEMU

@pytest.fixture(scope="module")
def torch_outs(tmp_path_factory):
    torch = pytest.importorskip("torch")
    import models
    import tinyds

    def make(name: str) -> Path:
        model, x = models.build(name)
        torch.manual_seed(1)
        calib = torch.randn(64, *x.shape[1:]).numpy()
        out = tmp_path_factory.mktemp(name) / "out"
        tinyds.convert(model, calib=calib, mcu="stm32f4", out=out, name=name, log=lambda s: None)
        return out
    return {name: make(name) for name in ("dscnn", "mobilenet_v2")}


@pytest.mark.parametrize("name, n_random", [("dscnn", 200), ("mobilenet_v2", 20)])
@pytest.mark.parametrize("mcu", ["stm32f4", "cortex-m0plus"])
def test_torch_models_bit_exact_in_qemu(qemu_runs, name, n_random, mcu):
    r = qemu_runs[(name, mcu)]()
    print(r.text())
    assert r.vectors == 64 + 2 * n_random + 3 and r.mismatched_vectors == 0, r.text()
