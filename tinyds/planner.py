"""Static activation memory: one arena, offsets from tensor lifetimes.

Every activation tensor gets a place: the caller's input buffer, the caller's
output buffer (the last kernel writes there directly, no copy), or an offset
in one static arena. A reshape is only a new view, so its output shares its
input's buffer. Buffers whose lifetimes do not overlap share arena bytes;
placement is TFLM's greedy-by-size strategy (largest first, lowest offset that
does not collide with a buffer alive at the same time).
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
class Plan:
    buffers: list[Buffer]
    arena_size: int
    by_tensor: dict[str, Buffer] = field(default_factory=dict)

    def location(self, tensor: str) -> tuple[str, int]:
        b = self.by_tensor[tensor]
        return b.where, b.offset

    @property
    def unshared_size(self) -> int:
        """What the arena would need without reuse: the saving the planner buys."""
        return sum(b.size for b in self.buffers if b.where == "arena")


def is_alias(g: Graph, op) -> bool:
    """A reshape whose output shares its input's bytes (no code is emitted for it)."""
    return op.type in ALIASING_OPS


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _buffers(g: Graph) -> list[Buffer]:
    root = {g.inputs[0]: g.inputs[0]}
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
    groups[root[g.inputs[0]]].where = "input"
    out = groups[root[g.outputs[0]]]
    out.last = len(g.ops)
    if out.where != "input":
        out.where = "output"
    return list(groups.values())


def _overlap_in_time(a: Buffer, b: Buffer) -> bool:
    return a.first <= b.last and b.first <= a.last


def plan(g: Graph) -> Plan:
    """Place every activation tensor of g; the arena holds everything but the I/O buffers."""
    buffers = _buffers(g)
    placed: list[Buffer] = []
    for b in sorted((b for b in buffers if b.where == "arena"), key=lambda b: (-b.size, b.first)):
        offset = 0
        for other in sorted((o for o in placed if _overlap_in_time(b, o)), key=lambda o: o.offset):
            if offset + b.size <= other.offset:
                break
            offset = max(offset, _align(other.offset + other.size))
        b.offset = offset
        placed.append(b)
    arena = max((b.offset + b.size for b in placed), default=0)
    return Plan(buffers, _align(arena), {t: b for b in buffers for t in b.tensors})
