"""The outputs beside the Makefile and PlatformIO: CMake (the library target through
add_subdirectory on the host, and the firmware with the arm-none-eabi toolchain file,
built with Ninja and booted in QEMU), the Arduino library checked against the Arduino
library specification (1.5 format) and its sketch compiled and run on the host, and
the Zephyr module checked structurally."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tinyds import reference, verify
from tinyds.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_dscnn.pt"
CALIB = ROOT / "examples" / "digits_calib.npy"
NAME = "digits_dscnn"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("integrations") / "out"
    labels = out.parent / "labels.txt"
    labels.write_text("".join(f"digit {i}\n" for i in range(10)))
    assert main(["generate", str(MODEL), "--calib", str(CALIB), "-o", str(out),
                 "--labels", str(labels)]) == 0
    return out


def sample(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The demo's sample and the reference output for it."""
    o = verify.load_output(out)
    text = (out / "src" / "tinyds_sample.h").read_text()
    body = text[text.index("sample_input["):].split("{", 1)[1].split("}", 1)[0]
    x = np.array([int(v) for v in re.findall(r"-?\d+", body)], np.int8)
    return x, reference.run(o.qg, x.reshape(1, *o.qg.input.shape[1:]))[0]


def sh(*cmd, cwd=None, env=None) -> str:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                         env=None if env is None else {**os.environ, **env}, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


APP_C = r"""
#include <stdio.h>
#include "digits_dscnn.h"
#include "sample.h"
int main(void)
{
    int8_t out[DIGITS_DSCNN_OUTPUT_SIZE];
    if (digits_dscnn_run(sample, out) != 0) {
        return 1;
    }
    for (int i = 0; i < DIGITS_DSCNN_OUTPUT_SIZE; i++) {
        printf("%d ", out[i]);
    }
    printf("\n%s\n", digits_dscnn_labels[digits_dscnn_top_class(out)]);
    return 0;
}
"""


@pytest.mark.parametrize("subdir", ["out", "out/lib/digits_dscnn"])
def test_cmake_add_subdirectory_gives_the_library_target(out, tmp_path, subdir):
    """A user's host project picks the model up; no firmware target leaks into it."""
    x, y = sample(out)
    app = tmp_path / "app"
    app.mkdir()
    (app / "sample.h").write_text("static const int8_t sample[] = {"
                                  + ", ".join(map(str, x)) + "};\n")
    (app / "main.c").write_text(APP_C)
    target = out if subdir == "out" else out / "lib" / NAME
    (app / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(app C)\n"
        f"add_subdirectory({target.as_posix()} tinyds)\n"
        "add_executable(app main.c)\n"
        f"target_compile_options(app PRIVATE -Wall -Wextra -Werror)\n"
        f"target_link_libraries(app PRIVATE {NAME})\n")
    sh("cmake", "-G", "Ninja", "-S", app, "-B", app / "build", env={"CFLAGS": "-Wall -Wextra -Werror"})
    sh("cmake", "--build", app / "build")
    assert not list((app / "build").rglob("firmware.elf"))
    printed = sh(app / "build" / "app").splitlines()
    assert printed[0].split() == [str(v) for v in y]
    assert printed[1] == f"digit {int(np.argmax(y))}"


@pytest.mark.slow
def test_cmake_firmware_builds_with_ninja_and_boots(out, tmp_path):
    """The standalone firmware: toolchain file, board link script, USART2 console."""
    x, y = sample(out)
    build = tmp_path / "build"
    sh("cmake", "-G", "Ninja", "-S", out, "-B", build,
       f"-DCMAKE_TOOLCHAIN_FILE={out / 'cmake' / 'arm-none-eabi.cmake'}",
       env={"CFLAGS": "-Werror -DTINYDS_SEMIHOSTING_EXIT"})
    log = sh("cmake", "--build", build)
    assert "warning" not in log
    elf = build / "firmware.elf"
    attrs = sh("arm-none-eabi-readelf", "-A", elf)
    assert "Tag_CPU_name: \"7E-M\"" in attrs or "Cortex-M4" in attrs or "v7E-M" in attrs, attrs
    assert "Tag_ABI_VFP_args: VFP registers" in attrs               # the MCU's hard-float ABI
    assert (build / "firmware.bin").stat().st_size > 0
    res = subprocess.run(["qemu-system-arm", "-M", "netduinoplus2", "-nographic", "-monitor",
                          "none", "-serial", "null", "-serial", "stdio", "-semihosting-config",
                          "enable=on,target=native", "-kernel", str(elf)],
                         capture_output=True, text=True, timeout=60)
    text = res.stdout.replace("\r\n", "\n")
    assert res.returncode == 0, text + res.stderr
    assert re.search(r"^output (.*)$", text, re.M).group(1).split() == [str(v) for v in y]
    assert "sample match" in text


# Arduino library specification, 1.5 format: library.properties fields and values.
ARDUINO_REQUIRED = ("name", "version", "author", "maintainer", "sentence", "paragraph",
                    "category", "url", "architectures")
ARDUINO_CATEGORIES = ("Display", "Communication", "Signal Input/Output", "Sensors",
                      "Device Control", "Timing", "Data Storage", "Data Processing", "Other")

ARDUINO_H = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
struct SerialStub {
    void begin(long) {}
    explicit operator bool() const { return true; }
    void print(const char *s) { fputs(s, stdout); }
    void print(int v) { printf("%d", v); }
    void print(unsigned long v) { printf("%lu", v); }
};
static SerialStub Serial;
static unsigned long micros() { return 42; }
"""


def test_arduino_library_follows_the_library_specification(out, tmp_path):
    lib = out / "arduino" / NAME
    props = dict(line.split("=", 1) for line in
                 (lib / "library.properties").read_text().splitlines() if line)
    assert all(props.get(k) for k in ARDUINO_REQUIRED), props
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.\-]{0,62}", props["name"])
    assert props["name"] == lib.name                       # the folder is the library's name
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["version"])  # semver
    assert props["category"] in ARDUINO_CATEGORIES
    assert props["includes"] == f"{NAME}.h" and (lib / "src" / f"{NAME}.h").is_file()
    assert (lib / "library.properties").read_bytes().decode("utf-8")  # UTF-8
    assert not (lib / ".development").exists() and not (lib / "utility").exists()
    # 1.5 format: sources only under src/, the same files as lib/NAME/
    assert sorted(p.name for p in lib.iterdir()) == ["examples", "library.properties", "src"]
    want = sorted(p.name for p in (out / "lib" / NAME).iterdir() if p.name != "CMakeLists.txt")
    assert sorted(p.name for p in (lib / "src").iterdir()) == want
    for f in want:
        assert (lib / "src" / f).read_bytes() == (out / "lib" / NAME / f).read_bytes()
    # each example is a sketch folder holding a .ino of its own name
    sketch = lib / "examples" / NAME
    assert (sketch / f"{NAME}.ino").is_file()
    # the sketch compiles as C++ (Arduino prepends Arduino.h) and prints the reference's bytes
    x, y = sample(out)
    (tmp_path / "Arduino.h").write_text(ARDUINO_H)
    (tmp_path / "main.cpp").write_text(f'#include "Arduino.h"\n#include "{NAME}.ino"\n'
                                       "int main() { setup(); return 0; }\n")
    objs = []
    for c in (lib / "src").glob("*.c"):
        objs.append(tmp_path / (c.stem + ".o"))
        sh("gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-c", c, "-o", objs[-1])
    sh("g++", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}", f"-I{sketch}", f"-I{lib / 'src'}",
       tmp_path / "main.cpp", *objs, "-o", tmp_path / "sketch")
    text = sh(tmp_path / "sketch")
    assert f"top class {int(np.argmax(y))} digit {int(np.argmax(y))}" in text
    assert re.search(r"^output (.*)$", text, re.M).group(1).split() == [str(v) for v in y]
    assert "sample match" in text


def test_zephyr_module_is_complete(out):
    z = out / "zephyr"
    module = yaml.safe_load((z / "module.yml").read_text())
    assert module["name"] == f"tinyds_{NAME}"
    assert (out / module["build"]["cmake"] / "CMakeLists.txt").is_file()
    kconfig = (out / module["build"]["kconfig"]).read_text()
    symbol = f"TINYDS_{NAME.upper()}"
    assert re.search(rf"^config {symbol}\n\tbool \"", kconfig, re.M)
    cmake = (z / "CMakeLists.txt").read_text()
    assert f"if(CONFIG_{symbol})" in cmake and "zephyr_library_named(" in cmake
    sources = re.findall(r"\$\{CMAKE_CURRENT_LIST_DIR\}/(\S+?\.c)", cmake)
    assert sorted(Path(s).name for s in sources) == [f"{NAME}.c", f"{NAME}_io.c"]
    for s in sources:
        assert (z / s).resolve().is_file(), s
    inc = re.search(r"zephyr_include_directories\(\$\{CMAKE_CURRENT_LIST_DIR\}/(\S+)\)", cmake)
    assert (z / inc.group(1) / f"{NAME}.h").resolve().is_file()
