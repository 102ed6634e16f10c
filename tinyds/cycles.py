"""Estimated Cortex-M4/M7 cycles of firmware from QEMU's execution trace.

Instruction counts say nothing about LDM, LDRD or taken branches, so `bench`
also costs every executed instruction with the Cortex-M4 TRM's timing table
(r0p1, table 3-1 and section 3.3.1), zero-wait-state memory assumed.

How: QEMU runs the ELF with `-d in_asm,exec,nochain`, logging through a pipe that
is parsed as it streams (KWS logs ~60 MB; nothing is kept but per-block sums).
`in_asm` lists the addresses of each translated block (TB), `exec` names the TB
before each execution (nochain: every execution). Instructions are decoded from
the ELF with capstone, so costs come from the opcode, not from log text. A taken
branch is seen as the next TB not starting at the fall-through of the last one.
Every entry into the marker function (`tinyds_profile`, called before the first
layer and after each) starts a new segment: segment k+1 is layer k, and its
instruction count equals the TIM2 count of the -icount run exactly.

Cortex-M4 model (M4Model): ALU, shifts, extends, SSAT, parallel and saturating
ops, MUL/MLA/SMULL/SMLAL/SMLAD/SMMLA and other multiplies 1; SDIV/UDIV DIV_CYCLES
(7: the middle of the TRM's 2-12, early termination depends on the operands);
single LDR* 2, or 1 when it directly follows a single LDR* whose loaded register
is not one of its address registers ("LDR [any] are pipelined when possible");
STR* with an immediate offset 1 (the write buffer), with a register offset 2, 1
after such an LDR*; LDRD/STRD 3; LDM/STM/PUSH/POP 1+N; TBB/TBH 2; IT 1 (never
folded); VLDR/VSTR 2, VLDM/VSTM/VPUSH/VPOP 1+N words, VMLA/VFMA & co. 3,
VDIV/VSQRT 14, other VFP 1; anything that redirects the flow (B, BL, BX, taken
B<cond>/CBZ/CBNZ, POP/LDM/LDR into PC, TBB/TBH, ALU writing PC) pays P = 2 more
cycles of pipeline refill (the TRM's P is 1-3). Not modelled: flash wait states
and the ART accelerator, unaligned-access penalties, bus contention, interrupts,
barrier drain (DSB/ISB/DMB cost 1); conditional instructions that fail their
condition are costed as executed.

Cortex-M7 model (M7Model), an approximation: Arm publishes no M7 timing table.
The M7 is an in-order dual-issue core; this model issues two adjacent
instructions in one cycle unless the second reads a register the first writes,
both access memory (one load/store issue assumed), both multiply (one MAC pipe),
the first redirects the flow, or either is a multi-cycle instruction. Loads
and stores take 1 issue cycle (TCM, 64-bit), LDRD/STRD 1, LDM/STM/PUSH/POP
ceil(N/2) (64-bit bus), divides and VFP as on the M4, and a taken branch costs
P = 1 extra cycle (branch prediction assumed to hit). Load-use and MAC latencies
and mispredictions are not modelled, so the M7 figure is optimistic.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tinyds.errors import TinydsError
from tinyds.targets import BENCH_MACHINE

DIV_CYCLES = 7
M4_REFILL = 2
M7_REFILL = 1

SINGLE_LOADS = {"ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "ldrt", "ldrbt", "ldrht", "ldrsbt",
                "ldrsht", "ldrex", "ldrexb", "ldrexh", "lda", "ldab", "ldah", "ldaex"}
SINGLE_STORES = {"str", "strb", "strh", "strt", "strbt", "strht", "strex", "strexb", "strexh",
                 "stl", "stlb", "stlh", "stlex"}
DOUBLES = {"ldrd", "strd"}
MULTIPLES = {"ldm", "ldmdb", "stm", "stmdb", "push", "pop"}
MULTIPLIES = {"mul", "mla", "mls", "smull", "umull", "smlal", "umlal", "umaal", "smlad",
              "smladx", "smlsd", "smlsdx", "smlald", "smlaldx", "smlsld", "smlsldx", "smuad",
              "smuadx", "smusd", "smusdx", "smmul", "smmulr", "smmla", "smmlar", "smmls",
              "smmlsr", "smulbb", "smulbt", "smultb", "smultt", "smlabb", "smlabt", "smlatb",
              "smlatt", "smulwb", "smulwt", "smlawb", "smlawt", "smlalbb", "smlalbt",
              "smlaltb", "smlaltt", "usad8", "usada8"}
DIVIDES = {"sdiv", "udiv"}
TABLE_BRANCHES = {"tbb", "tbh"}
VFP_MEMORY = {"vldr", "vstr"}
VFP_MULTIPLE = {"vldmia", "vldmdb", "vstmia", "vstmdb", "vpush", "vpop"}
VFP_MAC = {"vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms"}
VFP_LONG = {"vdiv", "vsqrt"}


@dataclass(frozen=True, eq=False)
class Insn:
    """One decoded instruction with what the cost models need to know about it."""
    addr: int
    size: int
    name: str                  # capstone's base mnemonic: "ldr", "smlad", "pop", ...
    words: int = 0             # registers moved by LDM/STM/PUSH/POP/VLDM/... (32-bit words)
    loaded: str | None = None  # a single load's destination register
    address_regs: frozenset = frozenset()
    reg_offset: bool = False   # a load/store addressed [Rn, Rm]
    reads: frozenset = frozenset()
    writes: frozenset = frozenset()

    @property
    def memory(self) -> bool:
        return self.name in SINGLE_LOADS or self.name in SINGLE_STORES or \
            self.name in DOUBLES or self.name in MULTIPLES or self.name in VFP_MEMORY \
            or self.name in VFP_MULTIPLE


def _fixed_cost(i: Insn) -> int:
    """Cycles that do not depend on the neighbours (VFP and divides as in the M4 TRM)."""
    if i.name in DIVIDES:
        return DIV_CYCLES
    if i.name in TABLE_BRANCHES or i.name in VFP_MEMORY:
        return 2
    if i.name in VFP_MULTIPLE:
        return 1 + i.words
    if i.name in VFP_MAC:
        return 3
    if i.name in VFP_LONG:
        return 14
    return 1


class M4Model:
    """Cortex-M4 TRM timings; the state between instructions is the register a
    single load just wrote (or None), which decides whether the next one pipelines."""
    name = "Cortex-M4"
    refill = M4_REFILL

    def block(self, insns: tuple[Insn, ...], state) -> tuple[int, object]:
        cycles = 0
        for i in insns:
            n = i.name
            if n in SINGLE_LOADS or n in SINGLE_STORES:
                full = 2 if n in SINGLE_LOADS or i.reg_offset else 1
                pipelined = state is not None and state not in i.address_regs
                cycles += full - 1 if pipelined and full == 2 else full
                state = i.loaded if n in SINGLE_LOADS else None
                continue
            if n in DOUBLES:
                cycles += 3
            elif n in MULTIPLES:
                cycles += 1 + i.words
            else:
                cycles += _fixed_cost(i)
            state = None
        return cycles, state


class M7Model:
    """Dual-issue approximation of the Cortex-M7 (see the module docstring); the
    state is the instruction waiting in the first issue slot, if its cycle can
    still take a partner."""
    name = "Cortex-M7 (dual-issue approximation)"
    refill = M7_REFILL

    @staticmethod
    def _cost(i: Insn) -> int:
        if i.name in MULTIPLES:
            return max(1, (i.words + 1) // 2)
        if i.name in DOUBLES or i.name in SINGLE_LOADS or i.name in SINGLE_STORES:
            return 1
        return _fixed_cost(i)

    @staticmethod
    def _pairs(first: Insn, second: Insn) -> bool:
        if first.writes & second.reads:
            return False
        if first.memory and second.memory:
            return False
        return not (first.name in MULTIPLIES and second.name in MULTIPLIES)

    def block(self, insns: tuple[Insn, ...], state) -> tuple[int, object]:
        cycles = 0
        for i in insns:
            single = self._cost(i) == 1
            if state is not None and single and self._pairs(state, i):
                state = None               # issued beside the previous one: free
                continue
            cycles += self._cost(i)
            state = i if single and "pc" not in i.writes else None
        return cycles, state


class InstructionsOnly:
    """No timing, just the trace's exact instruction counts: bench on QEMU microbit,
    which models no counter."""
    name = "instructions only"
    refill = 0

    def block(self, insns: tuple[Insn, ...], state) -> tuple[int, object]:
        return 0, None


MODELS = {"m4": M4Model, "m7": M7Model}


def model_for(name: str | None):
    """The cost model a core row names (tinyds.targets.cores), or None: M0+ and M3 time
    their multiplies and loads differently, and no model here pretends otherwise."""
    return MODELS[name]() if name in MODELS else None


class Decoder:
    """Decodes the ELF's loaded bytes at the addresses QEMU executes (capstone,
    Thumb M-profile), one address at a time, so literal pools never mislead it."""

    def __init__(self, segments: list[tuple[int, bytes]], symbols: dict[str, int]):
        """segments: (load address, bytes); symbols: function name -> address."""
        import capstone
        self._cs = capstone.Cs(capstone.CS_ARCH_ARM,
                               capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS)
        self._cs.detail = True
        self._mem_op = capstone.arm.ARM_OP_MEM
        self._reg_op = capstone.arm.ARM_OP_REG
        self._segments = segments
        self.symbols = symbols
        self._cache: dict[int, Insn] = {}

    @classmethod
    def from_elf(cls, elf: Path) -> "Decoder":
        from elftools.elf.elffile import ELFFile
        with open(elf, "rb") as f:
            e = ELFFile(f)
            segments = [(s["p_vaddr"], s.data()) for s in e.iter_segments()
                        if s["p_type"] == "PT_LOAD" and s["p_filesz"]]
            symbols = {s.name: s["st_value"] & ~1
                       for s in e.get_section_by_name(".symtab").iter_symbols()
                       if s["st_info"]["type"] == "STT_FUNC"}
        return cls(segments, symbols)

    def __getitem__(self, addr: int) -> Insn:
        insn = self._cache.get(addr)
        if insn is None:
            insn = self._cache[addr] = self._decode(addr)
        return insn

    def _decode(self, addr: int) -> Insn:
        for base, data in self._segments:
            if base <= addr < base + len(data):
                got = list(self._cs.disasm(data[addr - base:addr - base + 4], addr, 1))
                break
        else:
            got = []
        if not got:
            raise TinydsError(f"cycles: QEMU executed {addr:#x}, which is no instruction of "
                              "the ELF (code outside the image?)")
        c = got[0]
        read_regs, write_regs = c.regs_access()
        reads = frozenset(c.reg_name(r) for r in read_regs) - {"cpsr", "itstate"}
        writes = frozenset(c.reg_name(r) for r in write_regs) - {"cpsr", "itstate"}
        name = c.insn_name()
        regs = [op.reg for op in c.operands if op.type == self._reg_op]
        mem = [op.mem for op in c.operands if op.type == self._mem_op]
        words = 0
        if name in MULTIPLES:
            words = len(regs) - (name not in ("push", "pop"))   # ldm/stm: less the base
        elif name in VFP_MULTIPLE:
            words = sum(2 if c.reg_name(r).startswith("d") else 1 for r in regs)
        address = frozenset(c.reg_name(r) for m in mem for r in (m.base, m.index) if r)
        return Insn(addr, c.size, name, words,
                    loaded=c.reg_name(regs[0]) if name in SINGLE_LOADS and regs else None,
                    address_regs=address, reg_offset=any(m.index for m in mem),
                    reads=reads, writes=writes)


@dataclass
class Segment:
    """What ran between two entries of the marker function."""
    instructions: int = 0
    cycles: int = 0        # including `refills` pipeline refills of the model's P cycles
    refills: int = 0


class _Block:
    __slots__ = ("insns", "fallthrough", "costs")

    def __init__(self, insns: tuple[Insn, ...]):
        self.insns = insns
        self.fallthrough = insns[-1].addr + insns[-1].size
        self.costs: dict = {}      # entry state -> (cycles, exit state)


class TraceCost:
    """Consumes QEMU's `-d in_asm,exec,nochain` log line by line and sums, per
    segment, instructions, cycles and refills; memory stays bounded by the
    number of distinct translated blocks."""

    def __init__(self, decoder: Decoder, model, marker: str = "tinyds_profile"):
        if marker not in decoder.symbols:
            raise TinydsError(f"cycles: the ELF has no function {marker}; build it with "
                              "-DTINYDS_PROFILE")
        self.decoder, self.model = decoder, model
        self.marker = decoder.symbols[marker]
        self._segments = [[0, 0, 0]]
        self._by_host = {}         # QEMU's host address of a TB -> _Block
        self._by_addrs = {}        # tuple of guest addresses -> _Block (retranslations share costs)
        self._listing: list[int] | None = None
        self._pending: list[int] | None = None
        self._prev: _Block | None = None
        self._state = None

    def _block(self, addrs: list[int]) -> _Block:
        key = tuple(addrs)
        blk = self._by_addrs.get(key)
        if blk is None:
            insns = tuple(self.decoder[a] for a in addrs)
            for a, b in zip(insns, insns[1:]):
                if a.addr + a.size != b.addr:
                    raise TinydsError(f"cycles: QEMU's block at {addrs[0]:#x} disagrees with "
                                      f"capstone's decoding at {a.addr:#x}")
            blk = self._by_addrs[key] = _Block(insns)
        return blk

    def feed(self, lines) -> None:
        by_host, segments, model, marker = self._by_host, self._segments, self.model, self.marker
        seg = segments[-1]
        prev, state, listing, pending = self._prev, self._state, self._listing, self._pending
        for line in lines:
            if line.startswith("Trace "):
                _, _, host, fields = line.split(None, 4)[:4]
                pc = int(fields.split("/")[1], 16)
                if pending is not None and pending[0] == pc:
                    by_host[host] = self._block(pending)
                    pending = None
                blk = by_host.get(host)
                if blk is None or blk.insns[0].addr != pc:
                    raise TinydsError(f"cycles: the trace executes {pc:#x} before listing it; "
                                      "run QEMU with -d in_asm,exec,nochain")
                if prev is not None and pc != prev.fallthrough:
                    seg[2] += 1            # the flow changed: a pipeline refill
                    state = None
                if pc == marker:
                    seg = [0, 0, 0]
                    segments.append(seg)
                cost = blk.costs.get(state)
                if cost is None:
                    cost = blk.costs[state] = model.block(blk.insns, state)
                seg[0] += len(blk.insns)
                seg[1] += cost[0]
                state = cost[1]
                prev = blk
            elif listing is not None:
                if line.startswith("0x"):
                    listing.append(int(line[2:line.index(":")], 16))
                elif not line.strip():
                    pending = listing or pending
                    listing = None
            elif line.startswith("IN:"):
                listing = []
        self._prev, self._state, self._listing, self._pending = prev, state, listing, pending

    def segments(self) -> list[Segment]:
        """Segment 0 ran before the first marker entry; k ran from the k-th on."""
        P = self.model.refill
        return [Segment(n, c + P * r, r) for n, c, r in self._segments]


def estimate(elf: Path, model, machine: str = BENCH_MACHINE, marker: str = "tinyds_profile",
             timeout: float = 900) -> tuple[list[Segment], str]:
    """Run `elf` on QEMU `machine` with its execution log piped into TraceCost;
    returns the segments and what the firmware printed."""
    from tinyds.firmware import qemu_command
    cost = TraceCost(Decoder.from_elf(elf), model, marker)
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile("w+") as printed:
        cmd = qemu_command(elf, machine) + ["-d", "in_asm,exec,nochain", "-D", f"/dev/fd/{write_fd}"]
        proc = subprocess.Popen(cmd, stdout=printed, stderr=subprocess.STDOUT,
                                cwd=Path(elf).parent, pass_fds=(write_fd,))
        os.close(write_fd)
        watchdog = threading.Timer(timeout, proc.kill)   # a hung firmware logs forever
        watchdog.start()
        try:
            with os.fdopen(read_fd, "r", buffering=1 << 20, errors="replace") as log:
                cost.feed(log)
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        printed.seek(0)
        out = printed.read()
    if proc.returncode == -signal.SIGKILL:
        raise TinydsError(f"{elf}: traced QEMU {machine} run did not finish in {timeout:.0f} s; "
                          "the firmware hangs or faults")
    if proc.returncode != 0:
        raise TinydsError(f"{elf}: traced QEMU {machine} run exited {proc.returncode}: "
                          f"{out.strip()}")
    return cost.segments(), out
