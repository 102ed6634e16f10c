"""pad: reference vs numpy, vs TFLite Micro itself, and generated C vs reference."""
import numpy as np
import pytest

from test_avg_pool2d import act, tflm
from tinyds.errors import TinydsError
from tinyds.ir import Graph, Op
from tinyds.ops import pad


def pad_graph(shape, padding, q=(0.05, -7)):
    t, l, b, r = padding
    y_shape = (1, shape[1] + t + b, shape[2] + l + r, shape[3])
    op = Op("pad", "pad", ["x"], ["y"], dict(padding=tuple(padding)))
    return Graph("t", {"x": act("x", shape, *q), "y": act("y", y_shape, *q)}, [op], ["x"], ["y"])


def random_graph(rng):
    shape = (1, *(int(v) for v in rng.integers(1, 8, 3)))
    return pad_graph(shape, tuple(int(v) for v in rng.integers(0, 4, 4)),
                     (0.05, int(rng.integers(-128, 128))))


def test_border_is_the_zero_point_and_the_middle_the_input():
    rng = np.random.default_rng(40)
    for _ in range(20):
        g = random_graph(rng)
        t, l, b, r = g.ops[0].attrs["padding"]
        x = rng.integers(-128, 128, (5, *g.input.shape[1:])).astype(np.int8)
        y = pad.reference(g, g.ops[0], x)
        h, w = x.shape[1:3]
        np.testing.assert_array_equal(y[:, t:t + h, l:l + w], x)
        border = np.ones(y.shape, bool)
        border[:, t:t + h, l:l + w] = False
        assert (y[border] == g.input.qparams[1]).all()


def test_matches_tflite_micro():
    rng = np.random.default_rng(41)
    for _ in range(8):
        g = random_graph(rng)
        x = rng.integers(-128, 128, (10, *g.input.shape[1:])).astype(np.int8)
        np.testing.assert_array_equal(pad.reference(g, g.ops[0], x), tflm(g, x))


def test_generated_c_matches_reference(opkit):
    rng = np.random.default_rng(42)
    cases = [(g, rng.integers(-128, 128, (16, *g.input.shape[1:])).astype(np.int8))
             for g in (random_graph(rng) for _ in range(30))]
    cases.append((pad_graph((1, 3, 3, 2), (0, 0, 0, 0)), np.arange(18, dtype=np.int8).reshape(1, 3, 3, 2)))
    opkit.assert_c_matches_reference(cases)
    opkit.arm_compiles(cases[:4])


def test_requantizing_pad_is_rejected():
    g = pad_graph((1, 2, 2, 1), (1, 1, 1, 1))
    g.tensors["y"].zero_point = np.array([3], np.int64)
    with pytest.raises(TinydsError, match="differ"):
        pad.c_params(g, g.ops[0])
