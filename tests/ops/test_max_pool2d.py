"""max_pool2d: reference vs PyTorch, vs TFLite Micro itself, and generated C vs reference."""
import numpy as np
import torch
import torch.nn.functional as F

from test_avg_pool2d import pool_graph, random_case, tflm
from tinyds.ops import max_pool2d


def as_max(case):
    g, x = case
    g.ops[0].type = "max_pool2d"
    return g, x


def test_reference_equals_torch_max_pool_exactly():
    """Padding is -inf for PyTorch, so only in-bounds taps can win, as in TFLite."""
    rng = np.random.default_rng(10)
    for _ in range(40):
        g, x = as_max(random_case(rng))
        a = g.ops[0].attrs
        pt, pl, pb, pr = a["padding"]
        xt = F.pad(torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2), (pl, pr, pt, pb),
                   value=-np.inf)
        want = F.max_pool2d(xt, a["kernel"], a["stride"]).permute(0, 2, 3, 1).numpy()
        want = np.clip(want, a["act_min"], a["act_max"])
        np.testing.assert_array_equal(max_pool2d.reference(g, g.ops[0], x), want)


def test_matches_tflite_micro():
    rng = np.random.default_rng(11)
    for _ in range(12):
        g, x = as_max(random_case(rng, same_or_valid=True))
        np.testing.assert_array_equal(max_pool2d.reference(g, g.ops[0], x), tflm(g, x))


def test_generated_c_matches_reference(opkit):
    rng = np.random.default_rng(12)
    cases = []
    for _ in range(40):
        g, _ = as_max(random_case(rng))
        cases.append((g, rng.integers(-128, 128, (64, *g.input.shape[1:])).astype(np.int8)))
    g = pool_graph((1, 5, 5, 2), (3, 3), (2, 2), (1, 1, 1, 1), op_type="max_pool2d")
    cases.append((g, np.full((2, 5, 5, 2), -128, np.int8)))  # all at the floor
    for (g, x), got in zip(cases, opkit.run_kernels(cases)):
        np.testing.assert_array_equal(got, max_pool2d.reference(g, g.ops[0], x))
    assert (got == -128).all()
    opkit.arm_compiles(cases[:5])


def test_relu6_clamps_both_sides():
    g = pool_graph((1, 2, 2, 1), (2, 2), (2, 2), (0, 0, 0, 0), "relu6", scale=0.1, zp=-10)
    x = np.array([[[[-100], [-50]], [[-60], [-70]]], [[[120], [0]], [[5], [6]]]], np.int8)
    # relu6 at scale 0.1, zp -10: [0, 6] -> [-10, 50]
    assert max_pool2d.reference(g, g.ops[0], x).ravel().tolist() == [-10, 50]
