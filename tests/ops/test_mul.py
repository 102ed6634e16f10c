"""mul: reference vs float, vs TFLite Micro itself, and generated C vs reference, for
same-shape operands, squeeze-excite broadcasting ([1,1,1,C] x [1,H,W,C], either order)
and constant operands (a scalar, as hardsigmoid's 1/6, and a per-channel vector).

One-input graphs make the second operand: x seen through a reshape with other
quantization (same shape), or the MEAN of x over H, W (broadcast).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from test_avg_pool2d import act
from tinyds import reference
from tinyds.errors import TinydsError
from tinyds.ir import Graph, Op, Tensor
from tinyds.ops import mul
from tinyds.requant import derive_int_params

sys.path.insert(0, str(Path(__file__).parents[1]))
from oputil import run_c, tflm  # noqa: E402

VARIANTS = ("same", "broadcast", "broadcast_first", "scalar", "vector")


def qp(rng, lo=-2.0, hi=-0.3):
    return float(10 ** rng.uniform(lo, hi)), int(rng.integers(-128, 128))


def binary_graph(op_type, shape, variant, rng, out_scale):
    """x -> [second operand] -> op_type(x, b) (or (b, x)) -> y, quantized."""
    c = shape[3]
    t = {"x": act("x", shape, *qp(rng))}
    ops = []
    if variant == "same":
        t["b"] = act("b", shape, *qp(rng))
        ops.append(Op("reshape", "view", ["x"], ["b"], dict(shape=shape)))
    elif variant.startswith("broadcast"):
        t["b"] = act("b", (1, 1, 1, c), *qp(rng))
        ops.append(Op("mean", "squeeze", ["x"], ["b"], dict(axes=(1, 2), keepdims=True)))
    else:
        b_shape = (1,) if variant == "scalar" else (c,)
        s_b, zp_b = qp(rng)
        t["b"] = Tensor("b", b_shape, "int8", data=rng.integers(-128, 128, b_shape).astype(np.int8),
                        scale=np.array([s_b], np.float32), zero_point=np.array([zp_b], np.int64))
    s_x, s_b = t["x"].qparams[0], t["b"].qparams[0]
    t["y"] = act("y", shape, out_scale(s_x, s_b), int(rng.integers(-128, 128)))
    inputs = ["b", "x"] if variant == "broadcast_first" else ["x", "b"]
    activation = str(rng.choice(["none", "relu", "relu6"]))
    ops.append(Op(op_type, "layer", inputs, ["y"], dict(activation=activation)))
    return derive_int_params(Graph("t", t, ops, ["x"], ["y"]))


def random_graph(rng, variant, shape=(1, 5, 4, 3)):
    return binary_graph("mul", shape, variant, rng,
                        lambda s_x, s_b: 128 * s_x * s_b * float(10 ** rng.uniform(-1, 0.3)))


def operand_values(g, x):
    """Every tensor's int8 batch, and both operands dequantized as 4-D batches."""
    vals = reference.run_all(g, x)
    out = []
    for n in g.ops[-1].inputs:
        t = g.tensors[n]
        q = t.data[None] if t.is_const else vals[n]
        s, zp = t.qparams
        shape4 = (1,) * (4 - len(t.shape)) + tuple(t.shape)
        out.append(((q.astype(np.float64) - zp) * s).reshape((len(q), *shape4[1:])))
    return vals, out


def assert_reference_within_one_lsb(random_graph, fn, seed):
    rng = np.random.default_rng(seed)
    exact = total = 0
    for i in range(40):
        g = random_graph(rng, VARIANTS[i % len(VARIANTS)])
        x = rng.integers(-128, 128, (32, *g.input.shape[1:])).astype(np.int8)
        vals, (a, b) = operand_values(g, x)
        s_y, zp_y = g.output.qparams
        op = g.ops[-1]
        want = np.clip(np.round(fn(a, b) / s_y) + zp_y, op.attrs["act_min"], op.attrs["act_max"])
        err = np.abs(vals["y"] - want)
        assert err.max() <= 1, (op.inputs, g.tensors["b"].shape)
        exact += int((err == 0).sum())
        total += err.size
    assert exact / total > 0.97


def test_reference_within_one_lsb_of_float():
    assert_reference_within_one_lsb(random_graph, lambda a, b: a * b, 60)


def assert_matches_tflm(random_graph, seed):
    """Every broadcast variant of a binary op: the reference equals TFLM byte for byte."""
    rng = np.random.default_rng(seed)
    for i in range(15):
        g = random_graph(rng, VARIANTS[i % len(VARIANTS)])
        x = rng.integers(-128, 128, (30, *g.input.shape[1:])).astype(np.int8)
        np.testing.assert_array_equal(reference.run(g, x), tflm(g, x), err_msg=str(g.ops[-1].inputs))


def assert_c_matches_reference(random_graph, seed):
    """The generated C equals the reference over shapes and variants, int8 rails included."""
    rng = np.random.default_rng(seed)
    for i, shape in enumerate([(1, 5, 4, 3), (1, 7, 3, 9), (1, 1, 1, 1), (1, 2, 6, 16), (1, 3, 3, 5)]):
        g = random_graph(rng, VARIANTS[i % len(VARIANTS)], shape)
        x = rng.integers(-128, 128, (256, *shape[1:])).astype(np.int8)
        x[0], x[1] = -128, 127
        np.testing.assert_array_equal(run_c(g, x), reference.run(g, x))


def test_matches_tflite_micro():
    assert_matches_tflm(random_graph, 61)


def test_generated_c_matches_reference():
    assert_c_matches_reference(random_graph, 62)


def test_shapes_that_do_not_broadcast_are_rejected():
    g = random_graph(np.random.default_rng(0), "broadcast")
    g.tensors["b"].shape = (1, 1, 2, 3)
    with pytest.raises(TinydsError, match="mul of shapes"):
        mul.c_params(g, g.ops[-1])
