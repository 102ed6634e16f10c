"""The arena planner: no two buffers that are alive at the same time share a
byte, reuse makes the arena smaller than the sum, reshapes alias their input,
and the graph's input/output stay in the caller's buffers."""
from __future__ import annotations

import numpy as np
import pytest

from tinyds.ir import Graph, Op, Tensor
from tinyds.planner import plan


def _graph(sizes: dict[str, int], ops: list[tuple[str, list[str], str]], out: str) -> Graph:
    """Activation-only graph: the planner looks at types, edges and byte sizes only."""
    tensors = {n: Tensor(n, (1, s), "int8") for n, s in sizes.items()}
    return Graph("g", tensors, [Op(t, f"op{i}", ins, [o], {}) for i, (t, ins, o) in enumerate(ops)],
                 ["x"], [out])


def _simulate(g: Graph) -> None:
    """Execute the plan on a model of the memory: every op tags the bytes it writes,
    and every read must still find its producer's tag (nobody overwrote it)."""
    p = plan(g)
    arena = np.full(p.arena_size, -1)
    tag = {}
    for i, op in enumerate(g.ops):
        for name in op.inputs:
            where, off = p.location(name)
            if where == "arena":
                size = g.tensors[name].nbytes
                assert (arena[off:off + size] == tag[p.by_tensor[name].tensors[0]]).all(), \
                    f"{op.name} reads {name} after it was overwritten"
        out = op.outputs[0]
        where, off = p.location(out)
        if op.type == "reshape":
            assert p.location(out) == p.location(op.inputs[0])
        elif where == "arena":
            assert off % 4 == 0 and off + g.tensors[out].nbytes <= p.arena_size
            arena[off:off + g.tensors[out].nbytes] = i
            tag[p.by_tensor[out].tensors[0]] = i


def test_chain_reuses_memory_exactly_as_greedy_by_size_says():
    # x -> a(100) -> b(50) -> c(100) -> y: a and c are never alive together, so
    # they share offset 0 and b sits after them; 150 rounds up to 152.
    g = _graph({"x": 10, "a": 100, "b": 50, "c": 100, "y": 10},
               [("conv2d", ["x"], "a"), ("conv2d", ["a"], "b"), ("conv2d", ["b"], "c"),
                ("conv2d", ["c"], "y")], "y")
    p = plan(g)
    assert p.location("x") == ("input", 0) and p.location("y") == ("output", 0)
    assert p.location("a") == ("arena", 0) and p.location("c") == ("arena", 0)
    assert p.location("b") == ("arena", 100)
    assert p.arena_size == 152 < p.unshared_size == 250
    _simulate(g)


def test_residual_keeps_the_skip_alive():
    # a feeds both b and the add after c: a must survive b and c.
    g = _graph({"x": 8, "a": 64, "b": 64, "c": 64, "d": 64, "y": 4},
               [("conv2d", ["x"], "a"), ("conv2d", ["a"], "b"), ("conv2d", ["b"], "c"),
                ("add", ["a", "c"], "d"), ("fully_connected", ["d"], "y")], "y")
    p = plan(g)
    offsets = {n: p.location(n)[1] for n in "abcd"}
    assert offsets["a"] not in (offsets["b"], offsets["c"])
    assert p.arena_size == 192            # a, b, c alive at once; d reuses b's bytes
    _simulate(g)


def test_reshape_aliases_and_output_reshape_writes_the_callers_buffer():
    g = _graph({"x": 12, "a": 24, "r": 24, "b": 6, "y": 6},
               [("conv2d", ["x"], "a"), ("reshape", ["a"], "r"), ("fully_connected", ["r"], "b"),
                ("reshape", ["b"], "y")], "y")
    p = plan(g)
    assert p.location("r") == p.location("a") == ("arena", 0)
    assert p.location("b") == p.location("y") == ("output", 0)
    assert p.arena_size == 24
    _simulate(g)


def test_reshape_only_graph_is_input_to_output():
    g = _graph({"x": 12, "y": 12}, [("reshape", ["x"], "y")], "y")
    p = plan(g)
    assert p.location("y") == ("input", 0) and p.arena_size == 0


@pytest.mark.parametrize("seed", range(40))
def test_random_dags_never_overwrite_a_live_buffer(seed):
    rng = np.random.default_rng(seed)
    sizes = {"x": int(rng.integers(1, 300))}
    ops = []
    for i in range(int(rng.integers(2, 14))):
        live = [n for n in sizes]
        kind = rng.choice(["conv2d", "add", "reshape"], p=[0.6, 0.25, 0.15])
        name = f"t{i}"
        if kind == "add" and len(live) >= 2:
            ins = list(rng.choice(live, 2, replace=False))
            sizes[name] = int(rng.integers(1, 300))
        elif kind == "reshape":
            ins = [str(rng.choice(live))]
            sizes[name] = sizes[ins[0]]
        else:
            kind, ins = "conv2d", [str(rng.choice(live))]
            sizes[name] = int(rng.integers(1, 300))
        ops.append((str(kind), [str(n) for n in ins], name))
    g = _graph(sizes, ops, ops[-1][2])
    _simulate(g)
    p = plan(g)
    arena = [b for b in p.buffers if b.where == "arena"]
    for a in arena:
        for b in arena:
            if a is not b and a.first <= b.last and b.first <= a.last:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
    assert p.arena_size <= sum((b.size + 3) // 4 * 4 for b in arena)
