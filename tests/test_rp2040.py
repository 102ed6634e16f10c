"""RP2040 (Raspberry Pi Pico): the boot2 stage is the project's own assembly with the
CRC the bootrom checks, the image puts it at the start of flash and the vector table
after it, the console is UART0, and firmware.uf2 is a well-formed UF2 of the image,
which the project's own Makefile, CMake and PlatformIO builds write without tinyds
installed. No emulator models the RP2040, so these checks are structural."""
from __future__ import annotations

import binascii
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile

from tinyds import rp2040
from tinyds.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_dscnn.pt"
CALIB = ROOT / "examples" / "digits_calib.npy"


def _bitrev(v: int, width: int) -> int:
    return int(f"{v:0{width}b}"[::-1], 2)


def test_crc32_is_the_bootroms():
    assert rp2040.crc32_mpeg2(b"123456789") == 0x0376E6E7      # CRC-32/MPEG-2 check value
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 252):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        # the same CRC through zlib's reflected one: reflect the bytes in, the result out
        flipped = bytes(_bitrev(b, 8) for b in data)
        want = _bitrev(binascii.crc32(flipped) ^ 0xFFFFFFFF, 32)
        assert rp2040.crc32_mpeg2(data) == want


def test_boot2_code_is_the_assembled_source(tmp_path):
    obj, binary = tmp_path / "boot2.o", tmp_path / "boot2.bin"
    subprocess.run(["arm-none-eabi-as", "-mcpu=cortex-m0plus", "-mthumb",
                    str(ROOT / "firmware" / "rp2040_boot2.S"), "-o", str(obj)], check=True)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".boot2", str(obj),
                    str(binary)], check=True)
    assert binary.read_bytes() == rp2040.BOOT2_CODE
    image = rp2040.boot2_image()
    assert len(image) == 256 and image[:len(rp2040.BOOT2_CODE)] == rp2040.BOOT2_CODE
    assert struct.unpack("<I", image[252:])[0] == rp2040.crc32_mpeg2(image[:252])
    # what it writes: the XIP SSI, its SPI_CTRLR0 with read command 03h, VTOR, the flash image
    words = set(struct.unpack_from("<I", rp2040.BOOT2_CODE, o)[0]
                for o in range(0, len(rp2040.BOOT2_CODE) - 3, 4))
    assert {0x18000000, 0x180000F4, 0x03000218, 0x001F0300, 0x10000100, 0xE000ED08} <= words


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("rp2040") / "out"
    assert main(["generate", str(MODEL), "--calib", str(CALIB), "--mcu", "rp2040",
                 "-o", str(out)]) == 0
    # no tinyds to import: no PYTHONPATH, and Python without site-packages (-S)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(["make", "-C", str(out), "WARN=-Wall -Wextra -Werror",
                          f"PYTHON={sys.executable} -S -I"], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rp2040_uf2.py build/firmware.bin firmware.uf2" in res.stdout
    return out


def test_image_starts_with_boot2_then_the_vector_table(built):
    with open(built / "build" / "firmware.elf", "rb") as f:
        elf = ELFFile(f)
        boot2 = elf.get_section_by_name(".boot2")
        vectors = elf.get_section_by_name(".isr_vector")
        assert (boot2["sh_addr"], boot2["sh_size"]) == (0x10000000, 256)
        assert boot2.data() == rp2040.boot2_image()
        assert vectors["sh_addr"] == 0x10000100        # where boot2 points VTOR
        sp, reset = struct.unpack_from("<2I", vectors.data())
    assert sp == 0x20000000 + 264 * 1024                 # the end of SRAM
    assert reset & 1 and 0x10000100 < reset < 0x10000000 + 2 * 1024 * 1024
    image = (built / "build" / "firmware.bin").read_bytes()
    assert image[:256] == rp2040.boot2_image()
    assert "-DTINYDS_CONSOLE_RP2040_UART0" in (built / "platformio.ini").read_text()
    assert "CONSOLE ?= TINYDS_CONSOLE_RP2040_UART0" in (built / "Makefile").read_text()


def test_uf2_holds_the_image_for_the_rp2040(built):
    image = (built / "build" / "firmware.bin").read_bytes()
    data = (built / "firmware.uf2").read_bytes()          # where the README says
    assert len(data) % 512 == 0
    blocks = [data[i:i + 512] for i in range(0, len(data), 512)]
    assert len(blocks) == -(-len(image) // 256)
    payload = b""
    for n, block in enumerate(blocks):
        m0, m1, flags, addr, size, number, total, family = struct.unpack_from("<8I", block)
        assert (m0, m1, struct.unpack_from("<I", block, 508)[0]) == (
            0x0A324655, 0x9E5D5157, 0x0AB16F30)
        assert flags == 0x00002000 and family == 0xE48BFF56          # family ID present
        assert (addr, size, number, total) == (0x10000000 + 256 * n, 256, n, len(blocks))
        assert block[32 + 256:508] == bytes(508 - 288)
        payload += block[32:32 + 256]
    assert payload[:len(image)] == image and payload[len(image):] == bytes(len(payload) - len(image))


def test_uf2_refuses_an_image_without_boot2(tmp_path, capsys):
    (tmp_path / "x.bin").write_bytes(bytes(1024))
    assert rp2040.main([str(tmp_path / "x.bin"), str(tmp_path / "x.uf2")]) == 2
    assert "boot2" in capsys.readouterr().err and not (tmp_path / "x.uf2").exists()


def test_the_projects_uf2_script_is_tinyds_rp2040(built):
    assert (built / "rp2040_uf2.py").read_bytes() == Path(rp2040.__file__).read_bytes()
    assert "firmware.uf2 beside this file" in (built / "platformio.ini").read_text()


@pytest.mark.slow
def test_cmake_and_platformio_builds_write_the_uf2(built, tmp_path):
    from test_project import offline_platformio
    pytest.importorskip("platformio", reason="pip install platformio scons")
    pytest.importorskip("SCons", reason="pip install platformio scons")
    out = tmp_path / "out"
    shutil.copytree(built, out, ignore=shutil.ignore_patterns("build", "firmware.uf2"))
    build = tmp_path / "build"
    for cmd in (["cmake", "-G", "Ninja", "-S", out, "-B", build,
                 f"-DCMAKE_TOOLCHAIN_FILE={out / 'cmake' / 'arm-none-eabi.cmake'}"],
                ["cmake", "--build", build]):
        res = subprocess.run(list(map(str, cmd)), capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    image = (build / "firmware.bin").read_bytes()
    assert (build / "firmware.uf2").read_bytes() == rp2040.uf2(image)
    (tmp_path / "pio").mkdir()
    env, platform = offline_platformio(tmp_path / "pio")
    ini = out / "platformio.ini"
    ini.write_text(ini.read_text().replace("platform = raspberrypi\n",
                                           f"platform = file://{platform}\n"))
    res = subprocess.run([sys.executable, "-m", "platformio", "run", "-d", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    image = (out / ".pio" / "build" / "rp2040" / "program.bin").read_bytes()
    assert image[:256] == rp2040.boot2_image()
    assert (out / "firmware.uf2").read_bytes() == rp2040.uf2(image)
