"""`tinyds bench out/`: instructions per layer, flash and RAM of the real firmware.

The project's own src/main.c is built for the MCU's core with TIM2 as its
counter and run on QEMU netduinoplus2 under `-icount shift=0`, where TIM2
(1 GHz, PSC 0) advances exactly once per executed instruction: the counts are
deterministic instructions, not cycles. Each layer's count includes the
profiling hook (a call and a timer read, about a dozen instructions).
Sizes come from the ELF that ran; the stack figure is the painted high-water mark.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

from tinyds import mcu as mcu_table
from tinyds import ops as op_modules
from tinyds.errors import TinydsError
from tinyds.firmware import build_elf, run_qemu
from tinyds.ir import Graph

BENCH_MACHINE = "netduinoplus2"
FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data")


@dataclass
class Layer:
    index: int
    name: str
    instructions: int
    op: str = ""
    shape: tuple = ()
    macs: int = 0


@dataclass
class Bench:
    model: str
    mcu: str
    layers: list[Layer]
    total_instructions: int
    sections: dict[str, int]       # ELF section sizes in bytes
    model_bytes: dict[str, int]    # bytes of the model's own symbols, by section
    arena: int
    stack: int
    sample_ok: bool
    printed: str = field(repr=False, default="")

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flash(self) -> int:
        return sum(self.sections.get(s, 0) for s in FLASH_SECTIONS)

    @property
    def ram(self) -> int:
        return self.sections.get(".data", 0) + self.sections.get(".bss", 0) + self.stack


def project_info(out_dir: Path) -> tuple[str, str]:
    """(model name, mcu) of a project written by tinyds.project.write_project."""
    glue = Path(out_dir) / "src" / "tinyds_model.h"
    if not glue.exists():
        raise TinydsError(f"{out_dir}: no src/tinyds_model.h; run `tinyds generate` first")
    text = glue.read_text()
    name = re.search(r'#define TINYDS_MODEL_NAME "(\w+)"', text).group(1)
    mcu = re.search(r'#define TINYDS_MCU_NAME "([\w-]+)"', text).group(1)
    return name, mcu


def elf_sizes(elf: Path, model: str) -> tuple[dict[str, int], dict[str, int]]:
    """Section sizes, and the bytes of symbols named `model_*` per section."""
    with open(elf, "rb") as f:
        e = ELFFile(f)
        sections = {s.name: s["sh_size"] for s in e.iter_sections() if s["sh_flags"] & 2}  # SHF_ALLOC
        names = {i: s.name for i, s in enumerate(e.iter_sections())}
        own: dict[str, int] = {}
        for sym in e.get_section_by_name(".symtab").iter_symbols():
            if sym.name.startswith(model + "_") and sym["st_size"] and isinstance(sym["st_shndx"], int):
                sec = names[sym["st_shndx"]]
                own[sec] = own.get(sec, 0) + sym["st_size"]
    return sections, own


def parse_output(printed: str) -> tuple[list[Layer], int, int, int, bool]:
    layers = [Layer(int(i), n, int(c)) for i, n, c in
              re.findall(r"^layer (\d+) (\S+) cycles (\d+)", printed, re.M)]

    def number(key: str) -> int:
        m = re.search(rf"^{key} (\d+)", printed, re.M)
        if not m:
            raise TinydsError(f"bench: the firmware did not print '{key}'; it printed: {printed.strip()}")
        return int(m.group(1))
    return (layers, number("total cycles"), number("arena bytes"), number("stack bytes"),
            "sample match" in printed)


def measure(out_dir: Path, graph: Graph | None = None) -> Bench:
    """Build out_dir's firmware for its MCU's core, run it under -icount, read the ELF.

    graph: the quantized graph the library came from, to label layers with op,
    output shape and MACs (one C layer per graph op, in order).
    """
    out_dir = Path(out_dir)
    name, mcu = project_info(out_dir)
    m = mcu_table.get(mcu)
    with tempfile.TemporaryDirectory(prefix="tinyds-bench-") as tmp:
        elf = build_elf(Path(tmp), out_dir / "lib" / name, name, m, out_dir / "src" / "main.c",
                        machine=mcu_table.MACHINES[BENCH_MACHINE],
                        defines=("TINYDS_PROFILE", "TINYDS_COUNTER_TIM2", "TINYDS_CONSOLE_SEMIHOSTING"))
        printed = run_qemu(elf, BENCH_MACHINE, Path(tmp), icount=True)
        sections, own = elf_sizes(elf, name)
    layers, total, arena, stack, ok = parse_output(printed)
    if graph is not None and len(graph.ops) == len(layers):
        for layer, op in zip(layers, graph.ops):
            layer.op = op.type
            layer.shape = tuple(graph.tensors[op.outputs[0]].shape)
            layer.macs = int(getattr(op_modules.get(op.type), "macs", lambda g, o: 0)(graph, op))
    return Bench(name, mcu, layers, total, sections, own, arena, stack, ok, printed)


def report(b: Bench) -> str:
    m = mcu_table.get(b.mcu)
    lines = [f"tinyds bench: {b.model} for {b.mcu} ({m.cpu}), QEMU {BENCH_MACHINE} -icount shift=0: "
             "counts are executed instructions",
             f"{'#':>3}  {'layer':<28} {'op':<17} {'output':<14} {'MACs':>10} {'instr':>11} {'MACs/instr':>10}"]
    for layer in b.layers:
        shape = "x".join(str(d) for d in layer.shape[1:]) if layer.shape else ""
        ratio = f"{layer.macs / layer.instructions:.3f}" if layer.macs and layer.instructions else ""
        lines.append(f"{layer.index:>3}  {layer.name[:28]:<28} {layer.op:<17} {shape:<14} "
                     f"{layer.macs or '':>10} {layer.instructions:>11} {ratio:>10}")
    ratio = f"{b.macs / b.total_instructions:.3f}" if b.macs else ""
    lines.append(f"{'':>3}  {'total (one inference)':<28} {'':<17} {'':<14} "
                 f"{b.macs or '':>10} {b.total_instructions:>11} {ratio:>10}")
    s = b.sections
    own = ", ".join(f"{k} {v}" for k, v in sorted(b.model_bytes.items()))
    lines += [
        f"flash: {b.flash} B of {m.flash} (.text {s.get('.text', 0)}, .rodata {s.get('.rodata', 0)}, "
        f".data {s.get('.data', 0)}, vectors {s.get('.isr_vector', 0)}); model symbols: {own}",
        f"RAM: {b.ram} B of {m.ram} (.data {s.get('.data', 0)}, .bss {s.get('.bss', 0)} "
        f"incl. arena {b.arena}, stack high-water {b.stack})",
        "sample output: " + ("matches the reference" if b.sample_ok else "MISMATCH"),
    ]
    return "\n".join(lines)


def tflm_arena_line(graph: Graph, arena: int) -> str:
    """The same quantized model's arena in TensorFlow Lite Micro, for comparison."""
    try:
        from tinyds.export_tflite import export_tflite, tflm_arena_size
        tflm = tflm_arena_size(export_tflite(graph))
    except ImportError:
        return "TFLM arena: not measured (pip install 'tinyds[tflite]' to compare)"
    except TinydsError as e:
        return f"TFLM arena: not measured ({e})"
    return (f"TFLM arena for the same model: {tflm['head']} B of tensors "
            f"({tflm['total']} B with its host-side bookkeeping); tinyds: {arena} B")


def bench(out_dir: Path, graph: Graph | None = None) -> str:
    """What `tinyds bench out/` prints; raises TinydsError if the firmware's sample check fails.

    graph: defaults to the quantized model generate saved in out/verify/."""
    from tinyds import verify
    bundle = Path(out_dir) / verify.BUNDLE
    if graph is None and (bundle / "model.json").exists():
        graph = verify.load_graph(bundle)
    b = measure(out_dir, graph)
    text = report(b)
    if graph is not None:
        text += "\n" + tflm_arena_line(graph, b.arena)
    if not b.sample_ok:
        raise TinydsError(f"{out_dir}: bench: the firmware's output differs from the reference "
                          f"sample; run `tinyds verify {out_dir} --target qemu`\n{text}")
    return text
