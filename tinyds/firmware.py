"""Cross-build a generated library for a Cortex-M core and run it in QEMU.

The QEMU variant links for the machine's memory (not the board's), prints and
exits through semihosting, and streams vectors through semihosting host files:
firmware/vector_runner.c reads vectors.bin and writes outputs.bin, so hundreds
of vectors cost one boot and no reflashing.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyds import progress, targets
from tinyds import verify
from tinyds.errors import TinydsError
from tinyds.targets import MACHINES, V6M_MACHINE, Machine, Target
from tinyds.project import FIRMWARE_DIR, console_define, link_script, model_glue

CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
APT_PACKAGES = {CC: "gcc-arm-none-eabi libnewlib-arm-none-eabi", QEMU: "qemu-system-arm"}
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffunction-sections",
          "-fdata-sections"]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        raise TinydsError(f"{tool}: not found; apt-get install {APT_PACKAGES[tool]} (tinyds "
                          "builds and runs firmware with it)")


def build_elf(build_dir: Path, lib_dir: Path, name: str, target: Target, main_c: Path,
              machine: Machine | None = None, defines: tuple[str, ...] = (),
              include: tuple[Path, ...] = ()) -> Path:
    """Compile lib_dir's C with firmware/ startup and `main_c` for target's core.

    machine: link for that QEMU machine's memory instead of the board's.
    defines: extra -D flags, e.g. the console and counter choice.
    include: more header folders (main_c's own folder is searched first).
    """
    _need(CC)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    mem = machine or target
    (build_dir / "link.ld").write_text(
        link_script(mem.flash_origin, mem.flash, mem.ram_origin, mem.ram))
    (build_dir / "tinyds_model.h").write_text(model_glue(name, target.name))
    sources = [FIRMWARE_DIR / "startup.c", FIRMWARE_DIR / "board.c", Path(main_c),
               *sorted(Path(lib_dir).glob("*.c"))]
    elf = build_dir / "firmware.elf"
    cmd = [CC, *target.cflags, *CFLAGS, *(f"-D{d}" for d in defines),
           f"-I{Path(main_c).parent}", f"-I{build_dir}", *(f"-I{d}" for d in include),
           f"-I{FIRMWARE_DIR}", f"-I{lib_dir}", *map(str, sources),
           "-nostartfiles", "--specs=nosys.specs", "-Wl,--gc-sections",
           "-T", str(build_dir / "link.ld"), "-o", str(elf)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise TinydsError(f"{lib_dir}: arm-none-eabi-gcc for {target.cpu} failed; fix the C:\n"
                          + res.stderr.strip())
    return elf


def qemu_command(elf: Path, machine: str) -> list[str]:
    """QEMU booting `elf` on `machine`, headless, with semihosting for output and exit."""
    _need(QEMU)
    return [QEMU, "-M", machine, "-nographic", "-monitor", "none", "-serial", "null",
            "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]


def run_qemu(elf: Path, machine: str, cwd: Path, icount: bool = False,
             timeout: float = 900) -> str:
    """Boot `elf` on a QEMU machine with semihosting; returns what it printed.

    icount: -icount shift=0, one virtual nanosecond per instruction, which makes
    netduinoplus2's 1 GHz TIM2 an exact instruction counter.
    """
    cmd = qemu_command(elf, machine)
    if icount:
        cmd += ["-icount", "shift=0"]
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinydsError(f"{elf}: QEMU {machine} did not finish in {timeout:.0f} s; "
                          "the firmware hangs or faults") from None
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise TinydsError(f"{elf}: QEMU {machine} exited {res.returncode}; output: {out.strip()}")
    return out


def run_vectors(lib_dir: Path, name: str, m: Target, inputs: np.ndarray,
                output_size: int, work_dir: Path | None = None, layer_sizes=None,
                out_dtype="int8"):
    """Run every row of `inputs` (N, input_size), of the model's input type, through the
    library on the board m's core in QEMU; returns the (N, output_size) outputs (out_dtype), and with
    layer_sizes also every layer's output values (a TINYDS_DUMP build; int16 in a 16x8 model)."""
    inputs = np.ascontiguousarray(inputs).reshape(len(inputs), -1)
    defines = ("TINYDS_CONSOLE_SEMIHOSTING",) + (("TINYDS_DUMP",) if layer_sizes else ())
    with tempfile.TemporaryDirectory(prefix="tinyds-qemu-") as tmp:
        work = Path(work_dir or tmp)
        elf = build_elf(work, Path(lib_dir), name, m, FIRMWARE_DIR / "vector_runner.c",
                        machine=m.machine, defines=defines)
        (work / "vectors.bin").write_bytes(inputs.tobytes())
        printed = run_qemu(elf, m.qemu, work)
        if f"tinyds: vectors {len(inputs)}" not in printed:
            raise TinydsError(f"{lib_dir}: the QEMU run on {m.qemu} did not finish its "
                              f"{len(inputs)} vectors; it printed: {printed.strip()}")
        out = np.frombuffer((work / "outputs.bin").read_bytes(), dtype=out_dtype)
        dumped = (np.frombuffer((work / "layers.bin").read_bytes(),
                                verify.dump_dtype(out_dtype))
                  if layer_sizes else None)
    out = out.reshape(len(inputs), output_size)
    if dumped is None:
        return out
    return out, verify.split_layers(dumped, len(inputs), layer_sizes, lib_dir)


@dataclass
class QemuResult:
    machine: str
    target: Target
    name: str
    check: verify.BuildCheck
    seconds: float
    layers: verify.LayerCheck | None = None

    @property
    def vectors(self) -> int:
        return self.check.vectors

    @property
    def mismatched_vectors(self) -> int:
        return self.check.mismatched_vectors

    @property
    def ok(self) -> bool:
        return self.mismatched_vectors == 0 and (self.layers is None or not self.layers.first)

    def text(self) -> str:
        m = self.target
        c = self.check
        where = f"; first: {c.first}" if c.first else ""
        layers = [] if self.layers is None else [
            f"layers: {self.layers.layers} layers x {self.layers.vectors} vectors, "
            + (f"FIRST DIFFERENCE at {self.layers.first}" if self.layers.first
               else "every byte of every layer equals the reference")]
        return "\n".join([
            f"{self.name}: arm-none-eabi-gcc {' '.join(m.cflags)} {' '.join(CFLAGS)}: clean",
            f"QEMU {self.machine}: {c.vectors} vectors through the firmware (semihosting)",
            *layers,
            f"mismatches: {c.mismatched_vectors} vectors ({c.mismatched_bytes} bytes){where} "
            f"-> {'OK' if self.ok else 'FAILED'} ({self.seconds:.1f} s)"])


def verify_qemu(out_dir: Path, n_random: int = 200, seed: int = 0,
                target: Target | None = None) -> QemuResult:
    """`tinyds verify out/ --target qemu`: the library cross-built for the MCU's
    core (or `target`'s) runs the stored calibration vectors, n_random realistic and
    n_random random ones and the extremes on the matching QEMU machine; every byte is compared with
    the NumPy reference, and every layer's bytes on the first LAYER_VECTORS (a second,
    TINYDS_DUMP build)."""
    t0 = time.perf_counter()
    o = verify.load_output(out_dir)
    m = target or o.target
    x = verify.verify_inputs(o.qg, o.stored, n_random, seed)
    with progress.bar(desc=f"QEMU {m.qemu}", total=2, unit="firmware") as bar:
        got = run_vectors(o.lib_dir, o.name, m, x.reshape(len(x), -1), verify.output_size(o.qg),
                          out_dtype=o.qg.output.dtype)
        bar.update()
        few = x[:verify.LAYER_VECTORS]
        sizes = [o.qg.tensors[op.outputs[0]].size for op in o.qg.ops]
        _, dumped = run_vectors(o.lib_dir, o.name, m, few.reshape(len(few), -1),
                                verify.output_size(o.qg), layer_sizes=sizes,
                                out_dtype=o.qg.output.dtype)
        bar.update()
    check = verify.check("firmware", got, verify.reference_outputs(o.qg, x))
    layers = verify.check_layers(o.qg, dumped, few)
    return QemuResult(m.qemu, m, o.name, check, time.perf_counter() - t0,
                      layers)


@dataclass
class Boot:
    """How `tinyds run` boots a project's firmware on QEMU."""
    machine: str
    defines: tuple[str, ...]  # the console (TINYDS_CONSOLE_*) and counter the build uses
    serial: int               # QEMU serial port index that console is
    icount: bool              # -icount shift=0: one virtual nanosecond per instruction
    notes: tuple[str, ...]


# What the linker says when the image does not fit the machine's memory.
DOES_NOT_FIT = ("will not fit in region", "overflowed by", "not enough RAM left for the stack")


def boot_plan(m: Target, v6m_machine: bool = True) -> Boot:
    """The QEMU machine for the board m, and a console and counter QEMU really models on it.
    ARMv6-M boots on microbit, a real Cortex-M0 whose SysTick the demo reads
    (v6m_machine=False: the MCU's own machine, for an image too big for microbit)."""
    v6m = MACHINES[V6M_MACHINE]
    if m.armv6m and v6m_machine:
        board = f" (on {m.board}: {m.console})" if m.pio_board else ""
        return Boot(v6m.name, (console_define(v6m.consoles[0][0]),
                               'TINYDS_COUNTER_UNIT="SysTick ticks"'), 0, True, (
            f"a Cortex-M0 with {v6m.ram // 1024} KB RAM; its nRF51 UART0 is the console{board}",
            "counts are SysTick ticks of QEMU's 16 MHz clock under -icount shift=0 (1 ns per "
            "instruction: one tick per 62.5 instructions), not cycles; on the board SysTick "
            "counts core cycles"))
    notes = [f"the firmware does not fit QEMU {v6m.name}'s {v6m.ram // 1024} KB RAM and "
             f"{v6m.flash // 1024} KB flash"] if m.armv6m else []
    modelled = dict(m.machine.consoles)
    if m.console in modelled:
        console, serial = m.console, modelled[m.console]
    else:
        console, serial = m.machine.consoles[0]
        notes.append(f"{m.board}'s console ({m.console}) is not modelled by QEMU {m.qemu}: "
                     f"its {console.replace('_', ' ').upper()} stands in")
    counter = m.machine.counter or "TINYDS_COUNTER_NONE"
    if m.machine.counter:
        notes.append("counts are executed instructions (TIM2 under -icount shift=0), not cycles; "
                     "on the board the demo reads DWT->CYCCNT")
    else:
        notes.append(f"QEMU {m.qemu} has no cycle or instruction counter: counts read 0; "
                     "`tinyds bench` counts instructions")
    return Boot(m.qemu, (console_define(console), counter), serial, bool(m.machine.counter),
                tuple(notes))


def build_project(out_dir: Path, build_dir: Path, name: str, m: Target,
                  boot: Boot) -> Path | None:
    """out/'s own firmware (src/*.c, the user's main.c included, and lib/NAME/*.c) linked
    for the QEMU machine's memory, printing on its console, exiting when main returns;
    None when it does not fit the machine's memory."""
    _need(CC)
    mem = MACHINES[boot.machine]
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "link.ld").write_text(
        link_script(mem.flash_origin, mem.flash, mem.ram_origin, mem.ram))
    lib_dir = Path(out_dir) / "lib" / name
    sources = sorted((Path(out_dir) / "src").glob("*.c")) + sorted(lib_dir.glob("*.c"))
    elf = build_dir / "firmware.elf"
    cmd = [CC, *m.cflags, "-std=c99", "-O2", "-Wall", "-Wextra", "-ffunction-sections",
           "-fdata-sections", "-DTINYDS_PROFILE", *(f"-D{d}" for d in boot.defines),
           "-DTINYDS_SEMIHOSTING_EXIT", f"-I{Path(out_dir) / 'src'}", f"-I{lib_dir}",
           *map(str, sources), "-nostartfiles", "--specs=nosys.specs", "-Wl,--gc-sections",
           "-T", str(build_dir / "link.ld"), "-o", str(elf)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 and any(k in res.stderr for k in DOES_NOT_FIT):
        return None
    if res.returncode != 0:
        first = next((ln for ln in res.stderr.splitlines() if "error" in ln), res.stderr.strip())
        raise TinydsError(f"{out_dir}: building the firmware for {m.cpu} failed; fix the C: "
                          f"{first}")
    return elf


def run_project(out_dir: Path, timeout: float = 60, stdout=None) -> int:
    """`tinyds run out/`: build out/'s firmware, boot it on the MCU's QEMU machine with
    its console on stdout, and return the firmware's exit status (0: main returned 0)."""
    from .names import check_name
    meta = verify.load_meta(out_dir)
    try:
        name, target = check_name(meta["name"]), targets.get(meta["mcu"])
    except TinydsError as e:
        raise TinydsError(f"{out_dir}/tinyds.json: damaged ({e}); run tinyds generate again"
                          ) from None
    if meta.get("lib_only") or not (Path(out_dir) / "src").is_dir():
        raise TinydsError(f"{out_dir}: has no firmware project (generated with --lib-only?); "
                          "run tinyds generate without --lib-only")
    boot = boot_plan(target)
    with tempfile.TemporaryDirectory(prefix="tinyds-run-") as tmp:
        elf = build_project(Path(out_dir), Path(tmp), name, target, boot)
        if elf is None and boot.machine == V6M_MACHINE:
            boot = boot_plan(target, v6m_machine=False)
            elf = build_project(Path(out_dir), Path(tmp), name, target, boot)
        if elf is None:
            raise TinydsError(f"{out_dir}: the firmware does not fit QEMU {boot.machine}'s "
                              "memory; make src/ or the model smaller")
        cmd = qemu_command(elf, boot.machine)
        cmd[cmd.index("-serial"):cmd.index("-serial") + 2] = (
            ["-serial", "null"] * boot.serial + ["-serial", "stdio"])
        if boot.icount:
            cmd += ["-icount", "shift=0"]
        print(f"tinyds run: {out_dir} ({target.name}) on QEMU {boot.machine}; "
              + "; ".join(boot.notes), file=stdout, flush=True)
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=stdout, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TinydsError(f"{out_dir}: the firmware still ran after {timeout:g} s (a main "
                              "that never returns?); pass a larger --timeout") from None
    return res.returncode
