"""leaky_relu: reference vs PyTorch, vs TFLite Micro itself, and generated C vs reference.

Every int8 input value is swept (one (1, 16, 16, 1) tensor holds all 256), so
each multiplier's whole domain is compared, not a sample of it.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_avg_pool2d import act
from tinyds import reference
from tinyds.errors import TinydsError
from tinyds.ir import Graph, Op
from tinyds.requant import derive_int_params

ALL_INT8 = np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)


def unary_graph(op_type, q_in, q_out, attrs=None, shape=(1, 16, 16, 1)):
    """One element-wise layer x -> y as a quantized graph."""
    t = {"x": act("x", shape, *q_in), "y": act("y", shape, *q_out)}
    return derive_int_params(Graph("t", t, [Op(op_type, "layer", ["x"], ["y"], dict(attrs or {}))],
                                   ["x"], ["y"]))


def random_qparams(rng):
    return float(10 ** rng.uniform(-2.5, -0.3)), int(rng.integers(-128, 128))


def assert_within_one_lsb(gs, fn, min_exact):
    """reference vs round(fn(dequantized x) / s_out) + zp_out over every int8 input: never
    more than 1 LSB apart, and exact on at least min_exact of all values (TFLite's double
    rounding misses ties by one where a multiplier's right shift is small)."""
    exact = [_exact(g, fn(g)) for g in gs]
    assert np.mean(exact) >= min_exact, np.mean(exact)


def _exact(g, fn) -> float:
    (s_in, zp_in), (s_out, zp_out) = g.input.qparams, g.output.qparams
    x = torch.tensor((ALL_INT8.astype(np.float64) - zp_in) * s_in)
    want = np.clip(np.round(fn(x).numpy() / s_out) + zp_out, -128, 127)
    got = reference.run(g, ALL_INT8)
    err = np.abs(got.astype(np.int64) - want)
    assert err.max() <= 1, (g.ops[0].attrs, int(err.argmax()))
    return float((err == 0).mean())


def random_graph(rng):
    return unary_graph("leaky_relu", random_qparams(rng), random_qparams(rng),
                       {"alpha": float(rng.uniform(0.01, 0.9))})


def test_reference_within_one_lsb_of_pytorch():
    rng = np.random.default_rng(30)
    assert_within_one_lsb([random_graph(rng) for _ in range(30)],
                          lambda g: lambda x: F.leaky_relu(x, g.ops[0].attrs["alpha"]), 0.9)


def test_tflite_micro_and_generated_c_match_the_reference(opkit):
    opkit.check_op([(random_graph(rng), ALL_INT8) for rng in map(np.random.default_rng, (31, 32))
                    for _ in range(20)], tflm=True)


def test_non_positive_slope_is_refused():
    with pytest.raises(TinydsError, match="slope -0.1 is not positive"):
        unary_graph("leaky_relu", (0.1, 0), (0.1, 0), {"alpha": -0.1})
