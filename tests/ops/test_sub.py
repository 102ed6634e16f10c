"""sub: reference vs float, vs TFLite Micro itself, and generated C vs reference, with
the operand shapes of test_mul (same shape, broadcast either order, constants)."""
import sys
from pathlib import Path

import numpy as np

from test_avg_pool2d import tflm
from test_mul import VARIANTS, assert_reference_within_one_lsb, binary_graph
from tinyds import reference

sys.path.insert(0, str(Path(__file__).parents[1]))
from oputil import run_c  # noqa: E402


def random_graph(rng, variant, shape=(1, 5, 4, 3)):
    return binary_graph("sub", shape, variant, rng,
                        lambda s_x, s_b: (s_x + s_b) * float(10 ** rng.uniform(-0.3, 0.5)))


def test_reference_within_one_lsb_of_float():
    assert_reference_within_one_lsb(random_graph, lambda a, b: a - b, 70)


def test_matches_tflite_micro():
    rng = np.random.default_rng(71)
    for i in range(15):
        g = random_graph(rng, VARIANTS[i % len(VARIANTS)])
        x = rng.integers(-128, 128, (30, *g.input.shape[1:])).astype(np.int8)
        np.testing.assert_array_equal(reference.run(g, x), tflm(g, x), err_msg=str(g.ops[-1].inputs))


def test_generated_c_matches_reference():
    rng = np.random.default_rng(72)
    for i, shape in enumerate([(1, 5, 4, 3), (1, 7, 3, 9), (1, 1, 1, 1), (1, 2, 6, 16), (1, 3, 3, 5)]):
        g = random_graph(rng, VARIANTS[i % len(VARIANTS)], shape)
        x = rng.integers(-128, 128, (256, *shape[1:])).astype(np.int8)
        x[0], x[1] = -128, 127
        np.testing.assert_array_equal(run_c(g, x), reference.run(g, x))
