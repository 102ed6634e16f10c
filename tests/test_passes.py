"""Float-graph passes on hand-built graphs: outputs unchanged (checked with the
float interpreter and, independently, with PyTorch), float-only ops gone,
and clear errors where a BN or activation has nothing to fold into."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from tinyds import calib, float_ref, frontends, passes
from tinyds.errors import TinydsError
from tinyds.ir import Graph, Op, Tensor

import models

RNG = np.random.default_rng(0)


class Builder:
    """A tiny graph builder: shapes are given, constants are random."""

    def __init__(self, shape):
        self.g = Graph("g", {"x": Tensor("x", shape)}, [], ["x"], [])
        self.n = 0

    def const(self, shape, lo=-1.0, hi=1.0):
        self.n += 1
        name = f"c{self.n}"
        self.g.add_tensor(Tensor(name, shape, data=RNG.uniform(lo, hi, shape).astype(np.float32)))
        return name

    def op(self, type_, inputs, oshape, **attrs):
        self.n += 1
        out = f"t{self.n}"
        self.g.add_tensor(Tensor(out, oshape))
        self.g.ops.append(Op(type_, f"{type_}{self.n}", inputs, [out], attrs))
        return out

    def bn(self, x, c, shape):
        return self.op("batch_norm", [x, self.const((c,)), self.const((c,), 0.2, 2.0), self.const((c,), 0.5, 1.5),
                                      self.const((c,))], shape, eps=1e-3)

    def out(self, *names):
        self.g.outputs = list(names)
        return self.g


CONV = dict(stride=(1, 1), dilation=(1, 1), padding=(1, 1, 1, 1), activation="none")


def outputs(g, x):
    v = float_ref.run(g, x)
    return [v[n] for n in g.outputs]


def assert_same(g0, g1, shape, atol=1e-5):
    x = RNG.normal(size=(4,) + tuple(shape[1:]))
    for a, b in zip(outputs(g0, x), outputs(g1, x)):
        np.testing.assert_allclose(b, a, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("kind", ["conv2d", "depthwise_conv2d", "fully_connected"])
@pytest.mark.parametrize("bias", [True, False])
def test_fold_batchnorm(kind, bias):
    if kind == "fully_connected":
        b = Builder((1, 6))
        w, shape, c = b.const((5, 6)), (1, 5), 5
        y = b.op(kind, ["x", w, b.const((5,)) if bias else ""], shape, activation="none")
    else:
        b = Builder((1, 5, 4, 3))
        c = 6
        w = b.const((c, 3, 3, 3)) if kind == "conv2d" else b.const((1, 3, 3, c))
        attrs = dict(CONV, depth_multiplier=2) if kind == "depthwise_conv2d" else CONV
        shape = (1, 5, 4, c)
        y = b.op(kind, ["x", w, b.const((c,)) if bias else ""], shape, **attrs)
    y = b.bn(y, c, shape)
    g0 = b.out(b.op("relu", [y], shape))
    before = copy.deepcopy(g0)
    g1 = passes.fold_batchnorm(g0)
    assert [op.type for op in g1.ops] == [kind, "relu"]
    assert g1.ops[0].inputs[2] != "" and g1.tensors[g1.ops[0].inputs[2]].shape == (c,)
    assert g1.ops[1].inputs == g1.ops[0].outputs
    assert_same(g0, g1, g0.input.shape)
    assert [op.type for op in g0.ops] == [op.type for op in before.ops]        # input graph untouched
    np.testing.assert_array_equal(g0.tensors[w].data, before.tensors[w].data)


def test_fold_batchnorm_output_of_graph():
    b = Builder((1, 3, 3, 2))
    y = b.bn(b.op("conv2d", ["x", b.const((4, 1, 1, 2)), ""], (1, 3, 3, 4), **CONV | {"padding": (0,) * 4}),
             4, (1, 3, 3, 4))
    g0 = b.out(y)
    g1 = passes.fold_batchnorm(g0)
    assert [op.type for op in g1.ops] == ["conv2d"] and g1.outputs == g1.ops[0].outputs
    assert set(g1.tensors) == {"x", *g1.ops[0].inputs[1:], g1.outputs[0]}       # BN constants dropped
    assert_same(g0, g1, g0.input.shape)


def test_fold_batchnorm_errors():
    b = Builder((1, 4, 4, 2))                                  # BN after a pool: nothing to fold into
    p = b.op("max_pool2d", ["x"], (1, 2, 2, 2), kernel=(2, 2), stride=(2, 2), padding=(0,) * 4, activation="none")
    with pytest.raises(TinydsError, match=r"g: layer batch_norm\d+: batch norm does not directly follow a conv"):
        passes.fold_batchnorm(b.out(b.bn(p, 2, (1, 2, 2, 2))))
    b = Builder((1, 4, 4, 2))                                  # conv output also read by an add
    c = b.op("conv2d", ["x", b.const((2, 1, 1, 2)), ""], (1, 4, 4, 2), **CONV | {"padding": (0,) * 4})
    with pytest.raises(TinydsError, match="cannot be folded"):
        passes.fold_batchnorm(b.out(b.op("add", [c, b.bn(c, 2, (1, 4, 4, 2))], (1, 4, 4, 2), activation="none")))
    b = Builder((1, 4, 4, 2))                                  # BN on the graph input
    with pytest.raises(TinydsError, match="cannot be folded"):
        passes.fold_batchnorm(b.out(b.bn("x", 2, (1, 4, 4, 2))))


@pytest.mark.parametrize("producer", ["conv2d", "add", "max_pool2d", "avg_pool2d", "fully_connected"])
@pytest.mark.parametrize("acts, fused", [(["relu"], "relu"), (["relu6"], "relu6"),
                                         (["relu", "relu6"], "relu6"), (["relu6", "relu"], "relu6")])
def test_fuse_activations(producer, acts, fused):
    if producer == "fully_connected":
        b = Builder((1, 4))
        shape = (1, 3)
        y = b.op(producer, ["x", b.const((3, 4), -4, 4), ""], shape, activation="none")
    else:
        b = Builder((1, 4, 4, 3))
        shape = (1, 4, 4, 3)
        if producer == "conv2d":
            y = b.op(producer, ["x", b.const((3, 3, 3, 3), -4, 4), ""], shape, **CONV)
        elif producer == "add":
            y = b.op(producer, ["x", "x"], shape, activation="none")
        else:
            y = b.op(producer, ["x"], shape, kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), activation="none")
    for a in acts:
        y = b.op(a, [y], shape)
    g0 = b.out(y)
    g1 = passes.fuse_activations(g0)
    assert [op.type for op in g1.ops] == [producer]
    assert g1.ops[0].attrs["activation"] == fused and g1.outputs == g1.ops[0].outputs
    x = RNG.normal(size=(4,) + tuple(g0.input.shape[1:])) * 12                # reaches both clamps
    ref = outputs(g0, x)[0]
    assert ref.min() == 0 and (fused == "relu" or ref.max() == 6)
    np.testing.assert_array_equal(outputs(g1, x)[0], ref)


def test_fuse_activation_errors():
    b = Builder((1, 4))
    with pytest.raises(TinydsError, match="g: layer relu1: relu must directly follow"):
        passes.fuse_activations(b.out(b.op("relu", ["x"], (1, 4))))          # on the graph input
    b = Builder((1, 4))
    y = b.op("fully_connected", ["x", b.const((4, 4)), ""], (1, 4), activation="none")
    r = b.op("relu6", [y], (1, 4))
    with pytest.raises(TinydsError, match="relu6 must directly follow"):         # FC output read twice
        passes.fuse_activations(b.out(b.op("add", [y, r], (1, 4), activation="none")))
    b = Builder((1, 2, 2, 4))
    y = b.op("reshape", ["x"], (1, 16), shape=(1, 16))
    with pytest.raises(TinydsError, match="relu must directly follow"):
        passes.fuse_activations(b.out(b.op("relu", [y], (1, 16))))


def test_remove_noop_reshapes():
    b = Builder((1, 1, 1, 6))
    r1 = b.op("reshape", ["x"], (1, 6), shape=(1, 6))
    r2 = b.op("reshape", [r1], (1, 1, 1, 6), shape=(1, 1, 1, 6))          # back to the input's shape
    f = b.op("fully_connected", [r2, b.const((3, 6)), ""], (1, 3), activation="none")
    r3 = b.op("reshape", [f], (1, 3), shape=(1, 3))                        # same shape: vanishes
    g0 = b.out(r3)
    g1 = passes.remove_noop_reshapes(g0)
    assert [op.type for op in g1.ops] == ["fully_connected"]
    assert g1.ops[0].inputs[0] == "x" and g1.outputs == g1.ops[0].outputs
    assert_same(g0, g1, g0.input.shape)
    b = Builder((1, 6))                                       # input -> reshape -> output: kept
    g = b.out(b.op("reshape", ["x"], (1, 6), shape=(1, 6)))
    assert len(passes.remove_noop_reshapes(g).ops) == 1


@pytest.mark.parametrize("name", models.NAMES)
def test_optimize_zoo_against_torch(name):
    model, x = models.build(name)
    g = passes.optimize(frontends.from_module(model, x))
    assert not {op.type for op in g.ops} & {"batch_norm", "relu", "relu6"}
    n_weighted = sum(isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)) for m in model.modules())
    assert sum(op.type in ("conv2d", "depthwise_conv2d", "fully_connected") for op in g.ops) == n_weighted
    torch.manual_seed(3)
    xs = torch.randn(4, *x.shape[1:])
    with torch.no_grad():
        want = model(xs).numpy()
    got = float_ref.run(g, calib.for_graph(g, xs.numpy()))[g.outputs[0]]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
