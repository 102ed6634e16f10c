"""Static activation memory: one arena, offsets from tensor lifetimes.

Every activation tensor gets a place: the caller's input buffer, the caller's
output buffer (the last kernel writes there directly, no copy), or an offset
in one static arena. A reshape is only a new view, so its output shares its
input's buffer. Buffers whose lifetimes do not overlap share arena bytes;
placement is TFLM's greedy-by-size strategy (largest first, lowest offset that
does not collide with a buffer alive at the same time).

Two things go beyond TFLM. A kernel may need scratch bytes during its call
(a buffer alive for that one layer). And a kernel that can work in place
(kernels.Kernel.inplace) writes its output over its input when the input dies
there. "channels" (channel c of every pixel is read before output channel c is
written): any whole number of pixels into the input; the planner puts its end
on the input's end. "pixels" (pixel p's input is read before its output is
written): from the same start when it is no wider, else ending at (or before)
the input's end, so that output pixel p never reaches input pixel p + 1.
"window"/"window_reverse" (im2col, pixel pairs forward or backward): within the
offset the kernel computed from its windows. Such buffers form a group that is
placed as one block.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Graph

ALIGN = 4          # word-aligned offsets so kernels may use 32-bit loads later
ALIASING_OPS = ("reshape",)


@dataclass
class Buffer:
    tensors: list[str]       # the tensors stored here (a tensor and its reshapes)
    size: int                # bytes
    first: int               # index of the op that writes it (-1: the graph input)
    last: int                # index of the last op that reads it (len(ops): the graph output)
    where: str = "arena"     # "input" | "output" | "arena"
    offset: int = 0          # arena offset when where == "arena"


@dataclass
class Group:
    """Buffers at fixed offsets from each other (an in-place chain), placed as one block."""
    members: list[tuple[Buffer, int]]     # (buffer, offset within the block)

    @property
    def size(self) -> int:
        return max(off + b.size for b, off in self.members)

    @property
    def first(self) -> int:
        return min(b.first for b, _ in self.members)

    @property
    def last(self) -> int:
        return max(b.last for b, _ in self.members)


@dataclass
class Plan:
    buffers: list[Buffer]
    arena_size: int
    by_tensor: dict[str, Buffer] = field(default_factory=dict)
    input_in_arena: bool = False    # the graph inputs live in the arena (NAME_input())
    output_in_arena: bool = False   # the graph outputs live in the arena (NAME_output())
    output_size: int = 0            # the caller's output buffers when they are not in it

    def location(self, tensor: str) -> tuple[str, int]:
        b = self.by_tensor[tensor]
        return b.where, b.offset

    @property
    def ram(self) -> int:
        """Arena plus the caller's input and output buffers where they are not in it."""
        return (self.arena_size + sum(b.size for b in self.buffers if b.where == "input")
                + (0 if self.output_in_arena else self.output_size))

    @property
    def unshared_size(self) -> int:
        """What the arena would need without reuse: the saving the planner buys."""
        return sum(b.size for b in self.buffers if b.where == "arena")


def is_alias(g: Graph, op) -> bool:
    """A reshape whose output shares its input's bytes (no code is emitted for it)."""
    return op.type in ALIASING_OPS


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _buffers(g: Graph, input_in_arena: bool = False, output_in_arena: bool = False
             ) -> list[Buffer]:
    """Buffers in order of first appearance: the graph inputs' come first."""
    root = {name: name for name in g.inputs}
    for op in g.ops:
        out = op.outputs[0]
        root[out] = root[op.inputs[0]] if is_alias(g, op) else out
    groups: dict[str, Buffer] = {}
    for t, r in root.items():
        b = groups.setdefault(r, Buffer([], g.tensors[r].nbytes, -1, -1))
        b.tensors.append(t)
    for i, op in enumerate(g.ops):
        if not is_alias(g, op):
            groups[root[op.outputs[0]]].first = i
        for name in op.inputs:
            if name in root:
                b = groups[root[name]]
                b.last = max(b.last, i)
    for b in groups.values():
        b.last = max(b.last, b.first)  # an unread output is still written
    for name in g.inputs:
        groups[root[name]].where = "arena" if input_in_arena else "input"
    for name in g.outputs:
        out = groups[root[name]]
        out.last = len(g.ops)
        if out.where != "input":
            out.where = "arena" if output_in_arena else "output"
    return list(groups.values())


def scratch_name(i: int) -> str:
    return f"scratch:{i}"


def _groups(g: Graph, buffers: list[Buffer], kernels) -> list[Group]:
    """One group per arena buffer, then in-place layers merge their output's group
    into their input's (the input must die in that layer)."""
    by_tensor = {t: b for b in buffers for t in b.tensors}
    group = {id(b): Group([(b, 0)]) for b in buffers if b.where == "arena"}
    for i, op in enumerate(g.ops):
        k = kernels[i] if kernels else None
        if k is None or not k.inplace:
            continue
        src, dst = by_tensor[op.inputs[0]], by_tensor[op.outputs[0]]
        if src.where != "arena" or dst.where != "arena" or src.last != i or src is dst:
            continue
        gs, gd = group[id(src)], group[id(dst)]
        if gs is gd or len(gd.members) != 1:
            continue
        base = dict((id(b), off) for b, off in gs.members)[id(src)]
        if k.inplace == "channels":
            if dst.size > src.size:
                continue
            # any whole number of pixels in: its end on the input's end, where the
            # next widening layer can grow down into bytes already dead
            shrink = src.size - dst.size
            gs.members.append((dst, base + (shrink if shrink % ALIGN == 0 else 0)))
        elif k.inplace == "pixels":   # a wider output ends at (or before) the input's end
            gs.members.append((dst, base - _align(max(0, dst.size - src.size))))
        elif k.inplace == "window":   # at most inplace_offset past the input's start
            gs.members.append((dst, base - _align(max(0, -k.inplace_offset))))
        else:                         # window_reverse: at least inplace_offset past it
            gs.members.append((dst, base + _align(k.inplace_offset)))
        low = min(off for _, off in gs.members)
        if low < 0:     # the widened output starts before the block: shift the block
            gs.members = [(b, off - low) for b, off in gs.members]
        group[id(dst)] = gs
    unique = {id(gr): gr for gr in group.values()}
    return list(unique.values())


def _place(g: Graph, kernels, inplace: bool, input_in_arena: bool = False,
           output_in_arena: bool = False) -> Plan:
    buffers = _buffers(g, input_in_arena, output_in_arena)
    for i, k in enumerate(kernels or []):
        if k is not None and k.scratch:
            buffers.append(Buffer([scratch_name(i)], k.scratch, i, i))
    groups = (_groups(g, buffers, kernels) if inplace else
              [Group([(b, 0)]) for b in buffers if b.where == "arena"])
    placed: list[tuple[int, Group]] = []
    for gr in sorted(groups, key=lambda gr: (-gr.size, gr.first)):
        offset = 0
        alive = sorted((o for o in placed if gr.first <= o[1].last and o[1].first <= gr.last),
                       key=lambda o: o[0])
        for other_off, other in alive:
            if offset + gr.size <= other_off:
                break
            offset = max(offset, _align(other_off + other.size))
        placed.append((offset, gr))
        for b, off in gr.members:
            b.offset = offset + off
    arena = max((off + gr.size for off, gr in placed), default=0)
    return Plan(buffers, _align(arena), {t: b for b in buffers for t in b.tensors},
                input_in_arena, output_in_arena, sum(g.tensors[n].nbytes for n in g.outputs))


def plan(g: Graph, kernels=None) -> Plan:
    """Place every activation tensor of g; the arena holds everything but the I/O buffers.

    kernels: per op, the chosen kernels.Kernel (or None for no code), for
    scratch bytes and in-place layers; without it every layer is out of place.
    A group holds its widest extent for its whole life, which can cost more than
    it saves next to long-lived buffers (residual skips): the smaller plan wins.
    When the first layer can run in place, the graph input may live in the arena
    too (the caller writes it at NAME_input()): chosen when the arena grows by
    less than the input buffer it saves. Likewise the output (NAME_output()), where
    the arena has room for it once the other buffers are dead; ties keep it out.
    Several inputs (outputs) are all in the arena or all in the caller's buffers."""
    configs = [(False, False)]              # (in place, input in the arena)
    io = [b for b in _buffers(g) if b.where == "input"]
    out_is_input = any(name in b.tensors for b in io for name in g.outputs)
    inplace = any(k is not None and k.inplace for k in kernels or [])
    if inplace:
        configs.append((True, False))
        first = kernels[0] if kernels else None
        if first is not None and first.inplace and not out_is_input:
            configs.append((True, True))
    if len(g.inputs) > 1 and not out_is_input:   # inputs that die early free arena bytes
        configs.append((inplace, True))
    candidates = [_place(g, kernels, inplace, into) for inplace, into in configs]
    if not out_is_input:
        candidates += [_place(g, kernels, inplace, into, output_in_arena=True)
                       for inplace, into in configs]
    return min(candidates, key=lambda p: p.ram)
