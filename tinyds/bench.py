"""`tinyds bench out/`: instructions and estimated cycles per layer, flash and RAM of the real firmware.

The project's demo main (as tinyds first wrote src/main.c, with its src/tinyds_sample.h) is built for the MCU's core with TIM2 as its
counter and run on QEMU netduinoplus2 under `-icount shift=0`, where TIM2
(1 GHz, PSC 0) advances exactly once per executed instruction: the counts are
deterministic instructions, not cycles. Each layer's count includes the
profiling hook (a call and a timer read, about a dozen instructions).
Cycles come from a second, traced run of the same ELF costed by tinyds.cycles
(Cortex-M4 TRM timings; an M7 approximation), whose per-layer instruction
counts must equal TIM2's. Sizes come from the ELF that ran; the stack figure is
the painted high-water mark. RAM counts what an application needs: the
library's static RAM, the caller's input and output buffers (the demo keeps its
sample input const, in flash; a real input is written at run time) and the stack.

ARMv6-M code (Cortex-M0+, RP2040) then runs again on QEMU microbit, a real Cortex-M0
with 16 KB RAM that faults on unaligned accesses, when its flash and its RAM (statics
and the stack, at least the linker's reserve) fit there. microbit models no exact
counter, so that ELF's tinyds_counter() loads a word with the same instructions as the
TIM2 read and its counts come from QEMU's execution trace, between calls of
tinyds_counter(); they must equal TIM2's, instruction for instruction.
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

from tinyds import cycles as cycle_models
from tinyds import targets
from tinyds import ops as op_modules
from tinyds import progress
from tinyds.errors import TinydsError
from tinyds.firmware import build_elf, run_qemu
from tinyds.ir import Graph
from tinyds.project import demo_main
from tinyds.targets import BENCH_MACHINE, MACHINES, V6M_MACHINE, Target

V6M_DEFINES = ("TINYDS_PROFILE", "TINYDS_COUNTER_TRACED", "TINYDS_CONSOLE_SEMIHOSTING")
FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data")


@dataclass
class Layer:
    index: int
    name: str
    instructions: int
    op: str = ""
    shape: tuple = ()
    macs: int = 0
    cycles: int | None = None      # estimated, None when not estimated


@dataclass
class Bench:
    model: str
    target: Target
    layers: list[Layer]
    total_instructions: int
    sections: dict[str, int]       # ELF section sizes in bytes
    model_bytes: dict[str, int]    # bytes of the model's own symbols, by section
    arena: int
    stack: int
    sample_ok: bool
    input_bytes: int = 0
    output_bytes: int = 0
    cycle_model: str = ""          # the model that estimated the cycles; "" when none did
    cycle_note: str = ""           # why cycles were not estimated
    machine: str = BENCH_MACHINE   # the QEMU machine whose run the figures come from
    machine_note: str = ""         # why an ARMv6-M model stayed off microbit
    printed: str = field(repr=False, default="")

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def cycles(self) -> int | None:
        """Estimated cycles of all layers (run()'s own entry and exit excluded)."""
        return sum(la.cycles for la in self.layers) if self.cycle_model else None

    @property
    def flash(self) -> int:
        return sum(self.sections.get(s, 0) for s in FLASH_SECTIONS)

    @property
    def library_ram(self) -> int:
        """The model's own .data and .bss (its arena and any other static state)."""
        return self.model_bytes.get(".data", 0) + self.model_bytes.get(".bss", 0)

    @property
    def ram(self) -> int:
        """RAM an application needs: library statics, its input and output, the stack."""
        return self.library_ram + self.input_bytes + self.output_bytes + self.stack


def project_info(out_dir: Path) -> tuple[str, Target]:
    """(model name, board) of a project written by tinyds.project.write_firmware."""
    glue = Path(out_dir) / "src" / "tinyds_model.h"
    if not glue.exists():
        raise TinydsError(f"{out_dir}: no src/tinyds_model.h; run `tinyds generate` first")
    text = glue.read_text()
    name = re.search(r'#define TINYDS_MODEL_NAME "(\w+)"', text).group(1)
    mcu = re.search(r'#define TINYDS_MCU_NAME "([\w-]+)"', text).group(1)
    return name, targets.get(mcu)


def elf_sizes(elf: Path, model: str, lib_sources: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Section sizes, and the bytes per section of the model's own symbols: its
    `model_*` globals and every static of its C files (lib_sources: file names)."""
    with open(elf, "rb") as f:
        e = ELFFile(f)
        sections = {s.name: s["sh_size"] for s in e.iter_sections() if s["sh_flags"] & 2}  # SHF_ALLOC
        names = {i: s.name for i, s in enumerate(e.iter_sections())}
        own: dict[str, int] = {}
        source = ""
        for sym in e.get_section_by_name(".symtab").iter_symbols():
            if sym["st_info"]["type"] == "STT_FILE":
                source = sym.name        # the locals that follow come from this file
                continue
            local = sym["st_info"]["bind"] == "STB_LOCAL"
            mine = sym.name.startswith(model + "_") or (local and source in lib_sources)
            if mine and sym["st_size"] and isinstance(sym["st_shndx"], int):
                sec = names[sym["st_shndx"]]
                own[sec] = own.get(sec, 0) + sym["st_size"]
    return sections, own


def parse_output(printed: str, counted: bool = True) -> tuple[list[Layer], int, int, int, bool]:
    """Layers, total instructions, arena, stack and the sample check the demo printed;
    counted=False for a run whose counter reads 0 (no layers, total 0)."""
    layers = [Layer(int(i), n, int(c)) for i, n, c in
              re.findall(r"^layer (\d+) (\S+) instructions (\d+)", printed, re.M)]

    def number(key: str) -> int:
        m = re.search(rf"^{key} (\d+)", printed, re.M)
        if not m:
            raise TinydsError(f"bench: the firmware did not print '{key}'; it printed: {printed.strip()}")
        return int(m.group(1))
    return (layers, number("total instructions") if counted else 0, number("arena bytes"),
            number("stack bytes"), "sample match" in printed)


def io_sizes(out_dir: Path, name: str) -> tuple[int, int]:
    """The caller's input and output buffers from the library's header: NAME_INPUT_TOTAL_SIZE
    (every input's elements; 0 when the inputs live in the arena, NAME_INPUT_IN_ARENA) and
    NAME_OUTPUT_TOTAL_SIZE (0 when NAME_OUTPUT_IN_ARENA), in bytes: each element's size from
    the header's NAME_input_t / NAME_output_t (2 in a 16x8 library)."""
    header = (Path(out_dir) / "lib" / name / f"{name}.h").read_text()
    in_arena = re.search(rf"#define {name.upper()}_INPUT_IN_ARENA 1\b", header)
    out_in_arena = re.search(rf"#define {name.upper()}_OUTPUT_IN_ARENA 1\b", header)

    def size(what: str) -> int:
        m = (re.search(rf"#define {name.upper()}_{what}_TOTAL_SIZE (\d+)", header)
             or re.search(rf"#define {name.upper()}_{what}_SIZE (\d+)", header))  # older headers
        if not m:
            raise TinydsError(f"{out_dir}: lib/{name}/{name}.h has no {name.upper()}_{what}_TOTAL_SIZE; "
                              "regenerate the folder with `tinyds generate`")
        t = re.search(rf"typedef (\w+) {name}_{what.lower()}_t;", header)
        return (2 if t and t.group(1) == "int16_t" else 1) * int(m.group(1))
    return (0 if in_arena else size("INPUT")), (0 if out_in_arena else size("OUTPUT"))


def estimate_cycles(b: Bench, elf: Path) -> None:
    """Cost a traced run of `elf` with the MCU core's model into b's layers;
    raises TinydsError if its instruction counts are not TIM2's."""
    model = cycle_models.model_for(b.target.core.cycle_model)
    if model is None:
        b.cycle_note = (f"no timing model for {b.target.cpu} here (the M4/M7 "
                        "models would misstate its multiplies and loads); instructions only")
        return
    try:
        segments, _ = cycle_models.estimate(elf, model, BENCH_MACHINE)
    except ImportError as e:
        b.cycle_note = f"not estimated ({e.name} is missing: pip install 'tinyds[firmware]')"
        return
    counted = [layer.instructions for layer in b.layers]
    traced = [s.instructions for s in segments[1:len(b.layers) + 1]]
    if traced != counted:
        raise TinydsError(f"bench: the traced run executed {traced} instructions per layer but TIM2 "
                          f"counted {counted}; the cycle estimate would be wrong (use --no-cycles)")
    for layer, seg in zip(b.layers, segments[1:]):
        layer.cycles = seg.cycles
    b.cycle_model = f"{model.name}, P={model.refill}"


def v6m_shortfall(b: Bench) -> list[str]:
    """What keeps b's firmware off QEMU microbit: flash, and RAM for its statics plus the
    larger of the stack it used and the stack the linker script reserves."""
    mach = MACHINES[V6M_MACHINE]
    s = b.sections
    ram = s.get(".data", 0) + s.get(".bss", 0) + max(b.stack, targets.STACK_BYTES)
    return ([f"flash {b.flash} B > {mach.flash} B"] if b.flash > mach.flash else []) + (
        [f"RAM {ram} B (statics and stack) > {mach.ram} B"] if ram > mach.ram else [])


def run_on_microbit(b: Bench, build_dir: Path, lib_dir: Path, demo: Path, include: Path) -> None:
    """Run b's ARMv6-M firmware on QEMU microbit and take its figures from there; raises
    TinydsError if the traced counts differ from TIM2's on netduinoplus2."""
    machine = V6M_MACHINE
    elf = build_elf(build_dir, lib_dir, b.model, b.target, demo, machine=MACHINES[machine],
                    defines=V6M_DEFINES, include=(include,))
    try:
        segments, printed = cycle_models.estimate(elf, cycle_models.InstructionsOnly(), machine,
                                                  marker="tinyds_counter")
    except TinydsError as e:
        if "tinyds: fault" not in str(e):
            raise
        raise TinydsError(f"{lib_dir}: bench: the firmware faulted on QEMU {machine}, a real "
                          f"Cortex-M0, after running on {BENCH_MACHINE}'s M4 core: an unaligned "
                          "access (ARMv6-M has none) or another fault; report it as a tinyds "
                          "bug") from None
    n = len(b.layers)
    # tinyds_counter() runs at main's start, before the first layer, after each, at the end
    traced = [s.instructions for s in segments[2:n + 2]]
    traced_total = sum(s.instructions for s in segments[1:n + 3])
    counted = [layer.instructions for layer in b.layers]
    if len(segments) != n + 4 or traced != counted or traced_total != b.total_instructions:
        raise TinydsError(
            f"bench: QEMU {machine}'s traced run executed {traced} instructions per layer "
            f"({traced_total} in all) but {BENCH_MACHINE}'s TIM2 counted {counted} "
            f"({b.total_instructions}) for the same ARMv6-M code; report this as a tinyds bug")
    _, _, _, stack, ok = parse_output(printed, counted=False)
    b.sections, _ = elf_sizes(elf, b.model, {c.name for c in lib_dir.glob("*.c")})
    b.machine, b.stack, b.sample_ok, b.printed = machine, stack, ok, printed


def measure(out_dir: Path, graph: Graph | None = None, cycles: bool = True,
            target: Target | None = None) -> Bench:
    """Build out_dir's firmware for its MCU's core, run it under -icount, read the ELF.

    graph: the quantized graph the library came from, to label layers with op,
    output shape and MACs (one C layer per graph op, in order).
    cycles: also trace the run and estimate cycles per layer (a few seconds more).
    target: build for this board's core instead of the project's (the same C on another core).
    """
    out_dir = Path(out_dir)
    name, project = project_info(out_dir)
    m = target or project
    lib_dir = out_dir / "lib" / name
    with tempfile.TemporaryDirectory(prefix="tinyds-bench-") as tmp, progress.bar(
            desc=f"bench on QEMU {BENCH_MACHINE}" + (f" and {V6M_MACHINE}" if m.armv6m else ""),
            total=2 + cycles + m.armv6m,
            unit="step") as bar:
        demo = Path(tmp) / "demo" / "main.c"       # the demo, not the user's own main.c
        demo.parent.mkdir()
        demo.write_text(demo_main(name, project))
        elf = build_elf(Path(tmp), lib_dir, name, m, demo,
                        machine=MACHINES[BENCH_MACHINE],
                        defines=("TINYDS_PROFILE", "TINYDS_COUNTER_TIM2", "TINYDS_CONSOLE_SEMIHOSTING"),
                        include=(out_dir / "src",))
        bar.update()
        printed = run_qemu(elf, BENCH_MACHINE, Path(tmp), icount=True)
        bar.update()
        sections, own = elf_sizes(elf, name, {c.name for c in lib_dir.glob("*.c")})
        layers, total, arena, stack, ok = parse_output(printed)
        b = Bench(name, m, layers, total, sections, own, arena, stack, ok,
                  *io_sizes(out_dir, name), printed=printed)
        if m.armv6m:
            short = v6m_shortfall(b)
            if short:
                b.machine_note = (f"not on QEMU {V6M_MACHINE} (Cortex-M0, "
                                  f"{MACHINES[V6M_MACHINE].ram} B RAM): "
                                  + ", ".join(short))
            else:
                try:
                    run_on_microbit(b, Path(tmp) / V6M_MACHINE, lib_dir, demo,
                                    out_dir / "src")
                except ImportError as e:
                    b.machine_note = (f"not on QEMU {V6M_MACHINE}: counting its "
                                      f"execution trace needs {e.name} (pip install "
                                      "'tinyds[firmware]')")
            bar.update()
        if cycles:
            estimate_cycles(b, elf)
            bar.update()
        else:
            b.cycle_note = "not estimated (--no-cycles)"
    if graph is not None and len(graph.ops) == len(layers):
        for layer, op in zip(layers, graph.ops):
            layer.op = op.type
            layer.shape = tuple(graph.tensors[op.outputs[0]].shape)
            layer.macs = int(getattr(op_modules.get(op.type), "macs", lambda g, o: 0)(graph, op))
    return b


def _ratio(a: int | None, b: int | None) -> str:
    return f"{a / b:.3f}" if a and b else ""


def report(b: Bench, clock_mhz: float | None = None) -> str:
    """The bench table; milliseconds at clock_mhz (default: the MCU's maximum clock)."""
    m = b.target
    mhz = clock_mhz or m.max_mhz

    def ms(cycles: int | None) -> str:
        return f"{cycles / (mhz * 1e3):.3f}" if cycles is not None else ""

    if b.cycle_model:
        how = (f"cycles estimated ({b.cycle_model}) on QEMU's execution trace, zero-wait-state "
               f"memory assumed (no flash wait states, caches or ART); ms at {mhz:g} MHz"
               + ("" if clock_mhz else f" ({m.name}'s maximum; --clock-mhz to change)"))
    else:
        how = f"cycles: {b.cycle_note}"
    if b.machine == BENCH_MACHINE:
        where = f"QEMU {BENCH_MACHINE} -icount shift=0: counts are executed instructions (TIM2)"
        where += f"; {b.machine_note}" if b.machine_note else ""
    else:
        where = (f"QEMU {b.machine} (Cortex-M0, {MACHINES[b.machine].ram} B RAM): "
                 "counts are executed instructions from QEMU's execution trace, equal to "
                 f"{BENCH_MACHINE}'s TIM2 count")
    lines = [f"tinyds bench: {b.model} for {m.name} ({m.cpu}), {where}", how,
             f"{'#':>3}  {'layer':<28} {'op':<17} {'output':<14} {'MACs':>10} {'instr':>11} "
             f"{'est.cycles':>11} {'MACs/cycle':>10} {'ms':>8}"]
    for layer in b.layers:
        shape = "x".join(str(d) for d in layer.shape[1:]) if layer.shape else ""
        lines.append(f"{layer.index:>3}  {layer.name[:28]:<28} {layer.op:<17} {shape:<14} "
                     f"{layer.macs or '':>10} {layer.instructions:>11} "
                     f"{'' if layer.cycles is None else layer.cycles:>11} "
                     f"{_ratio(layer.macs, layer.cycles):>10} {ms(layer.cycles):>8}")
    lines.append(f"{'':>3}  {'total (one inference)':<28} {'':<17} {'':<14} "
                 f"{b.macs or '':>10} {b.total_instructions:>11} "
                 f"{'' if b.cycles is None else b.cycles:>11} "
                 f"{_ratio(b.macs, b.cycles):>10} {ms(b.cycles):>8}")
    s = b.sections
    own = ", ".join(f"{k} {v}" for k, v in sorted(b.model_bytes.items()))
    demo = s.get(".data", 0) + s.get(".bss", 0) - b.library_ram - b.output_bytes
    lines += [
        f"MACs/instruction: {_ratio(b.macs, b.total_instructions) or '-'}; total instructions "
        "span the whole run() call, total cycles the layers",
        f"flash: {b.flash} B of {m.flash} (.text {s.get('.text', 0)}, .rodata {s.get('.rodata', 0)}, "
        f".data {s.get('.data', 0)}, vectors {s.get('.isr_vector', 0)}); model symbols: {own}",
        f"RAM: {b.ram} B of {m.ram} = library static {b.library_ram} (arena {b.arena}) + input "
        f"buffer {b.input_bytes}{' (input in the arena)' if b.input_bytes == 0 else ''} + output buffer {b.output_bytes}{' (output in the arena)' if b.output_bytes == 0 else ''} + stack high-water {b.stack}; "
        f"the demo's other statics ({demo} B: profiling stamps) are not counted",
        "sample output: " + ("matches the reference" if b.sample_ok else "MISMATCH"),
    ]
    return "\n".join(lines)


def tflm_arena_line(out_dir: Path, graph: Graph | None, b: Bench) -> str:
    """TensorFlow Lite Micro's arena for the user's own .tflite (kept by generate in
    verify/source.tflite), or for tinyds's export of a PyTorch model, beside tinyds's RAM."""
    from tinyds import bundle, outdir
    marker = Path(out_dir) / outdir.MARKER
    source = json.loads(marker.read_text()).get("source", "") if marker.is_file() else ""
    try:
        from tinyds.export_tflite import export_tflite, tflm_arena_size
        if source.endswith(".tflite"):
            path = Path(out_dir) / bundle.BUNDLE / bundle.SOURCE_TFLITE
            if not path.is_file():
                return (f"TFLM arena: not measured: {path} (the original {source}) is missing; "
                        "run tinyds generate again")
            what, model = f"the original {source}", path.read_bytes()
        elif graph is not None:
            what, model = "tinyds's .tflite export of the PyTorch model", export_tflite(graph)
        else:
            return "TFLM arena: not measured: out/verify/ has no quantized model to export"
        tflm = tflm_arena_size(model)
    except ImportError:
        return "TFLM arena: not measured (pip install 'tinyds[tflite]' to compare)"
    except TinydsError as e:
        return f"TFLM arena: not measured ({e})"
    return (f"TFLM arena for {what}: {tflm['head']} B of tensors incl. input and output "
            f"({tflm['total']} B with its host-side bookkeeping); tinyds arena + input + output: "
            f"{b.arena + b.input_bytes + b.output_bytes} B")


def bench(out_dir: Path, graph: Graph | None = None, cycles: bool = True,
          clock_mhz: float | None = None, target: Target | None = None) -> str:
    """What `tinyds bench out/` prints; raises TinydsError if the firmware's sample check fails.

    graph: defaults to the quantized model generate saved in out/verify/.
    target: build the library for this board's core instead of generate's."""
    from tinyds import bundle as saved
    if clock_mhz is not None and not clock_mhz > 0:
        raise TinydsError(f"--clock-mhz {clock_mhz:g}: must be a positive clock in MHz")
    bundle = Path(out_dir) / saved.BUNDLE
    if graph is None and (bundle / "model.json").exists():
        graph = saved.load_graph(bundle)
    b = measure(out_dir, graph, cycles, target)
    text = report(b, clock_mhz) + "\n" + tflm_arena_line(out_dir, graph, b)
    if not b.sample_ok:
        raise TinydsError(f"{out_dir}: bench: the firmware's output differs from the reference "
                          f"sample; run `tinyds verify {out_dir} --target qemu`\n{text}")
    from tinyds import report as html_report
    if html_report.record_bench(Path(out_dir), b):
        text += f"\nper-layer figures added to {Path(out_dir) / 'report.html'}"
    return text
