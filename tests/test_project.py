"""The firmware project around a generated library: MCU table, fit check,
files written, and that it builds and runs — with the Makefile on QEMU, and
with `pio run` offline through a test-only local PlatformIO platform."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyds import targets
from tinyds.errors import TinydsError
from tinyds.project import FIRMWARE_DIR, write_firmware

# A stand-in library honouring codegen's contract: layer 0 negates (saturating),
# layer 1 averages groups of 8 bytes (arithmetic shift). toy_ref is its spec.
TOY_H = """#ifndef TOY_H
#define TOY_H
#include <stdint.h>
typedef int8_t toy_input_t;
typedef int8_t toy_output_t;
#define TOY_INPUT_SIZE 64
#define TOY_OUTPUT_SIZE 8
#define TOY_INPUT_SCALE 0.5f
#define TOY_INPUT_ZERO_POINT (0)
#define TOY_OUTPUT_SCALE 0.5f
#define TOY_OUTPUT_ZERO_POINT (0)
#define TOY_INPUT_COUNT 1
#define TOY_OUTPUT_COUNT 1
#define TOY_INPUT_TOTAL_SIZE 64
#define TOY_OUTPUT_TOTAL_SIZE 8
#define TOY_ARENA_SIZE 64
#define TOY_NUM_LAYERS 3
extern const char *const toy_layer_names[TOY_NUM_LAYERS];
int toy_run(const int8_t *input, int8_t *output);
#endif
"""
TOY_C = """#include "toy.h"
#ifdef TINYDS_PROFILE
void tinyds_profile(const char *model, int layer);
#define DONE(i) tinyds_profile("toy", (i))
#else
#define DONE(i) ((void)0)
#endif
const char *const toy_layer_names[TOY_NUM_LAYERS] = {"negate", "nops", "mean8"};
static int8_t arena[TOY_ARENA_SIZE];
int toy_run(const int8_t *input, int8_t *output)
{
    DONE(-1);
    for (int i = 0; i < TOY_INPUT_SIZE; i++) {
        arena[i] = (int8_t)(input[i] == -128 ? 127 : -input[i]);
    }
    DONE(0);
#ifdef TOY_NOPS
    __asm__ volatile(".rept " TOY_NOPS "\\n\\tnop\\n\\t.endr");
#endif
    DONE(1);
    for (int o = 0; o < TOY_OUTPUT_SIZE; o++) {
        int32_t acc = 0;
        for (int k = 0; k < 8; k++) {
            acc += arena[o * 8 + k];
        }
        output[o] = (int8_t)(acc >> 3);
    }
    DONE(2);
    return 0;
}
"""


def toy_ref(x: np.ndarray) -> np.ndarray:
    neg = np.where(x == -128, 127, -x.astype(np.int32))
    return (neg.reshape(len(x), 8, 8).sum(axis=2) >> 3).astype(np.int8)


def toy_library(lib_dir: Path, nops: int | None = None) -> Path:
    lib_dir.mkdir(parents=True, exist_ok=True)
    (lib_dir / "toy.h").write_text(TOY_H)
    c = TOY_C if nops is None else f'#define TOY_NOPS "{nops}"\n' + TOY_C
    (lib_dir / "toy.c").write_text(c)
    return lib_dir


def toy_project(out: Path, mcu: str) -> tuple[np.ndarray, np.ndarray]:
    toy_library(out / "lib" / "toy")
    x = np.random.default_rng(1).integers(-128, 128, 64, dtype=np.int8)
    x[0] = -128
    y = toy_ref(x[None])[0]
    write_firmware(out, "toy", targets.get(mcu), x, y)
    return x, y


def test_mcu_table_covers_the_issue():
    t = targets.BOARDS
    for name in ["stm32f4", "stm32f7", "stm32h7", "stm32l4", "nrf52840", "rp2040",
                 "cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7"]:
        assert name in t
        assert t[name].qemu in targets.MACHINES
    f4 = t["stm32f4"]
    assert (f4.flash, f4.ram, f4.pio_board, f4.qemu) == (512 * 1024, 128 * 1024, "nucleo_f411re",
                                                         "netduinoplus2")
    assert "-mfpu=fpv4-sp-d16" in f4.cflags and f4.dsp
    assert t["rp2040"].cpu == "cortex-m0plus" and not t["rp2040"].dsp and not t["rp2040"].fpu
    assert t["cortex-m3"].qemu == "mps2-an385" and t["cortex-m7"].qemu == "mps2-an500"
    assert t["cortex-m4"].qemu == "mps2-an386"
    with pytest.raises(TinydsError, match="unknown MCU"):
        targets.get("stm32f9")


def test_too_big_model_error_gives_the_figures():
    with pytest.raises(TinydsError) as e:
        targets.check_fits(targets.get("stm32f4"), 600_000, 10_000, "big.pt")
    msg = str(e.value)
    assert msg.startswith("big.pt: ")
    assert f"flash {600_000 + targets.RUNTIME_FLASH_BYTES} B > {512 * 1024} B" in msg
    assert "RAM" not in msg.split(";")[0].split("(")[0]  # RAM fits: only flash is reported
    with pytest.raises(TinydsError, match=rf"RAM {200_000 + targets.STACK_BYTES} B > 98304 B"):
        targets.check_fits(targets.get("stm32l4"), 1000, 200_000)
    targets.check_fits(targets.get("stm32f4"), 400_000, 100_000)  # fits: no error


def test_write_project_files(tmp_path):
    x, y = toy_project(tmp_path, "stm32f4")
    for f in ["platformio.ini", "tinyds_flags.py", "Makefile", "link.ld", "src/main.c",
              "src/startup.c", "src/board.c", "src/tinyds_board.h", "src/tinyds_model.h",
              "src/tinyds_sample.h"]:
        assert (tmp_path / f).is_file(), f
    ini = (tmp_path / "platformio.ini").read_text()
    assert "platform = ststm32" in ini and "board = nucleo_f411re" in ini
    assert "-DTINYDS_CONSOLE_STM32F4_USART2" in ini
    ld = (tmp_path / "link.ld").read_text()
    assert "ORIGIN = 0x08000000, LENGTH = 524288" in ld and "ORIGIN = 0x20000000, LENGTH = 131072" in ld
    sample = (tmp_path / "src/tinyds_sample.h").read_text()
    body = sample[sample.index("sample_input["):].split("{", 1)[1].split("}", 1)[0]
    assert [int(v) for v in re.findall(r"-?\d+", body)] == x.tolist()
    glue = (tmp_path / "src/tinyds_model.h").read_text()
    assert "#define TINYDS_RUN toy_run" in glue and '"stm32f4"' in glue


def test_generic_core_has_no_platformio_board(tmp_path):
    toy_project(tmp_path, "cortex-m3")
    assert not (tmp_path / "platformio.ini").exists()
    assert "-mcpu=cortex-m3" in (tmp_path / "Makefile").read_text()


def qemu_serial(elf: Path, machine: str, uart_index: int) -> str:
    """Boot the real-board firmware; its UART `uart_index` goes to stdout."""
    serials = ["-serial", "null"] * uart_index + ["-serial", "stdio"]
    res = subprocess.run(["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none",
                          *serials, "-semihosting-config", "enable=on,target=native",
                          "-kernel", str(elf)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.replace("\r\n", "\n")


def check_demo_output(text: str, y: np.ndarray) -> None:
    assert "tinyds model toy" in text
    assert re.search(r"^output (.*)$", text, re.M).group(1).split() == [str(v) for v in y]
    assert f"top class {int(np.argmax(y))}" in text
    assert [m for m in re.findall(r"^layer \d+ (\w+) cycles", text, re.M)] == ["negate", "nops", "mean8"]
    assert "sample match" in text


@pytest.mark.slow
@pytest.mark.parametrize("mcu, machine, uart", [("stm32f4", "netduinoplus2", 1),
                                                ("cortex-m3", "mps2-an385", 0),
                                                ("cortex-m0plus", "mps2-an385", 0)])
def test_makefile_firmware_prints_over_its_uart_in_qemu(tmp_path, mcu, machine, uart):
    """The user's firmware itself (board link script, register-level UART) in QEMU:
    STM32F4 USART2 on netduinoplus2, the CMSDK UART on MPS2. Only the final
    semihosting exit is added so QEMU stops."""
    x, y = toy_project(tmp_path, mcu)
    res = subprocess.run(["make", "-C", str(tmp_path), "WARN=-Wall -Wextra -Werror",
                          "EXTRA_CFLAGS=-DTINYDS_SEMIHOSTING_EXIT"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "build/firmware.bin").stat().st_size > 0
    check_demo_output(qemu_serial(tmp_path / "build/firmware.elf", machine, uart), y)


def offline_platformio(root: Path) -> tuple[dict, Path]:
    """A PlatformIO core dir that needs no registry: SCons from PyPI linked as
    tool-scons, and firmware/pio_offline with boards made from the MCU table."""
    scons = root / "tool-scons"
    scons.mkdir()
    (scons / "package.json").write_text(json.dumps(
        {"name": "tool-scons", "version": "4.41101.0", "description": "SCons from PyPI"}))
    (scons / "scons.py").write_text("import sys\nfrom SCons.Script import main\nsys.exit(main())\n")
    core = root / "core"
    (core / "packages").mkdir(parents=True)
    (core / "packages" / "tool-scons.pio-link").write_text(json.dumps(
        {"cwd": "/", "spec": {"owner": "platformio", "name": "tool-scons",
                              "uri": f"symlink://{scons}"}}))
    platform = root / "platform"
    shutil.copytree(FIRMWARE_DIR / "pio_offline", platform)
    (platform / "boards").mkdir()
    for m in targets.BOARDS.values():
        if m.pio_board:
            (platform / "boards" / f"{m.pio_board}.json").write_text(json.dumps({
                "name": m.board, "vendor": "tinyds test", "url": "https://example.invalid",
                "frameworks": [], "build": {"cpu": m.cpu, "mcu": m.name, "f_cpu": "16000000L"},
                "upload": {"maximum_size": m.flash, "maximum_ram_size": m.ram}}))
    env = {**os.environ, "PLATFORMIO_CORE_DIR": str(core),
           "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",
           "PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL": "36500",
           "PLATFORMIO_SETTING_CHECK_PRUNE_SYSTEM_THRESHOLD": "0",
           "PLATFORMIO_DISABLE_PROGRESSBAR": "true"}
    return env, platform


@pytest.mark.slow
def test_pio_run_builds_offline_and_the_elf_runs(tmp_path):
    pytest.importorskip("platformio", reason="pip install platformio scons")
    pytest.importorskip("SCons", reason="pip install platformio scons")
    env, platform = offline_platformio(tmp_path)
    out = tmp_path / "out"
    x, y = toy_project(out, "stm32f4")
    ini = out / "platformio.ini"
    text = ini.read_text()
    assert "platform = ststm32\n" in text
    ini.write_text(text.replace("platform = ststm32\n", f"platform = file://{platform}\n"))
    env["PLATFORMIO_BUILD_FLAGS"] = "-DTINYDS_SEMIHOSTING_EXIT -Werror"
    res = subprocess.run([sys.executable, "-m", "platformio", "run", "-d", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[SUCCESS]" in res.stdout
    elf = out / ".pio" / "build" / "stm32f4" / "program.elf"
    attrs = subprocess.run(["arm-none-eabi-readelf", "-A", str(elf)], capture_output=True,
                           text=True).stdout
    assert "Tag_ABI_VFP_args: VFP registers" in attrs  # core flags reached the linker
    check_demo_output(qemu_serial(elf, "netduinoplus2", 1), y)


def big_conv_graph(channels: int):
    """A one-layer quantized graph whose 3x3 conv weights take channels^2 * 9 bytes."""
    from tinyds.ir import Graph, Op, Tensor
    from tinyds.requant import derive_int_params

    def act(name, shape):
        return Tensor(name, shape, "int8", scale=np.array([0.05], np.float32),
                      zero_point=np.array([0], np.int64))
    w = np.random.default_rng(0).integers(-127, 128, (channels, 3, 3, channels), dtype=np.int8)
    wt = Tensor("w", w.shape, "int8", data=w, scale=np.full(channels, 0.01, np.float32),
                zero_point=np.zeros(channels, np.int64), axis=0)
    op = Op("conv2d", "big_conv", ["x", "w", ""], ["y"],
            {"stride": (1, 1), "dilation": (1, 1), "padding": (1, 1, 1, 1), "activation": "none"})
    tensors = [act("x", (1, 4, 4, channels)), wt, act("y", (1, 4, 4, channels))]
    return derive_int_params(Graph("big", {t.name: t for t in tensors}, [op], ["x"], ["y"]))


def test_generate_refuses_a_model_too_big_before_writing(tmp_path):
    from tinyds.generate import generate
    out = tmp_path / "out"
    with pytest.raises(TinydsError) as e:
        generate(big_conv_graph(256), out, "big", targets.get("stm32f4"), source="big.pt")
    msg = str(e.value)
    assert msg.startswith("big.pt: ") and "does not fit stm32f4" in msg
    assert re.search(r"flash (\d+) B > 524288 B", msg)
    assert int(re.search(r"flash (\d+) B >", msg).group(1)) > 256 * 256 * 9
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # The same model fits the 1 MB stm32l4.
    generate(big_conv_graph(256), out, "big", targets.get("stm32l4"))
    assert (out / "lib" / "big" / "big.c").exists() and (out / "Makefile").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mcu", sorted(targets.BOARDS))
def test_every_mcu_project_builds_warning_free(tmp_path, mcu):
    toy_project(tmp_path, mcu)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # tinyds.rp2040
    res = subprocess.run(["make", "-C", str(tmp_path), "WARN=-Wall -Wextra -Werror"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    m = targets.get(mcu)
    syms = subprocess.run(["arm-none-eabi-nm", str(tmp_path / "build/firmware.elf")],
                          capture_output=True, text=True).stdout
    vectors = int(re.search(r"^([0-9a-f]+) R tinyds_vectors$", syms, re.M).group(1), 16)
    # the vector table sits where the core boots (after the RP2040's boot2 stage)
    assert vectors == m.flash_origin + (256 if m.boot2 else 0)
