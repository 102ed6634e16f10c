"""mean over H, W and over any other axes of 4-D and 2-D tensors (TFLM QuantizedMeanOrSum,
also for equal in/out quantization) vs PyTorch, vs TFLite Micro itself, and generated C vs
reference."""
import numpy as np
import pytest
import torch

from test_avg_pool2d import act, tflm
from tinyds.errors import TinydsError
from tinyds.fixedpoint import quantize_multiplier
from tinyds.ir import Graph, Op
from tinyds.ops import mean


AXES = [(1, 2), (1, 2), (3,), (1,), (2,), (1, 3), (2, 3), (1, 2, 3), (-1,)]


def mean_graph(shape, q_in, q_out, keepdims=True, axes=(1, 2)):
    reduced = {a % len(shape) for a in axes}
    y_shape = tuple(1 if i in reduced else d for i, d in enumerate(shape)) if keepdims else \
        tuple(d for i, d in enumerate(shape) if i not in reduced or i == 0)
    op = Op("mean", "gap", ["x"], ["y"], dict(axes=tuple(axes), keepdims=keepdims))
    return Graph("t", {"x": act("x", shape, *q_in), "y": act("y", y_shape, *q_out)}, [op],
                 ["x"], ["y"])


def random_graph(rng, requantize, shape=None, axes=(1, 2)):
    shape = shape or (1, int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 9)))
    if len(shape) == 2:
        axes = (1,)
    q_in = (float(10 ** rng.uniform(-2, 0)), int(rng.integers(-128, 128)))
    q_out = ((q_in[0] * float(10 ** rng.uniform(-0.7, 0.7)), int(rng.integers(-128, 128)))
             if requantize else q_in)
    return mean_graph(shape, q_in, q_out, keepdims=bool(rng.random() < 0.5), axes=axes)


def test_mean_within_one_lsb_of_float():
    rng = np.random.default_rng(31)
    exact = total = 0
    for i in range(36):
        axes = AXES[i % len(AXES)]
        g = random_graph(rng, requantize=i % 3 > 0, axes=axes)
        (s_in, zp_in), (s_out, zp_out) = g.input.qparams, g.output.qparams
        x = rng.integers(-128, 128, (16, *g.input.shape[1:])).astype(np.int8)
        real = (torch.tensor(x, dtype=torch.float64).mean(dim=axes).numpy() - zp_in) * s_in
        want = np.clip(np.round(real / s_out) + zp_out, -128, 127).reshape(16, -1)
        err = np.abs(mean.reference(g, g.ops[0], x).reshape(16, -1) - want)
        assert err.max() <= 1
        exact += int((err == 0).sum())
        total += err.size
    assert exact / total > 0.85     # TFLM truncates 1/count into the multiplier: ties land off by one


def test_folded_multiplier_by_hand():
    # s_in/s_out = 0.75 -> (3 << 29, 0); 49 taps: shift by floor(log2 49) = 5, divide by 49
    assert quantize_multiplier(0.75) == (3 << 29, 0)
    assert mean.folded_multiplier(0.75, 1.0, 49) == ((3 << 34) // 49, -5)
    # the shift never goes past 31 + shift (TFLM's clamp)
    m, s = quantize_multiplier(2.0 ** -28)
    assert mean.folded_multiplier(2.0 ** -28, 1.0, 1 << 10) == ((m << (31 + s)) >> 10, -31)


def test_matches_tflite_micro_with_and_without_requantization():
    rng = np.random.default_rng(32)
    for i in range(27):
        g = random_graph(rng, requantize=i % 2 == 1, axes=AXES[i % len(AXES)],
                         shape=(1, 37) if i == 26 else None)
        x = rng.integers(-128, 128, (20, *g.input.shape[1:])).astype(np.int8)
        np.testing.assert_array_equal(mean.reference(g, g.ops[0], x), tflm(g, x))


def test_generated_c_matches_reference(opkit):
    rng = np.random.default_rng(33)
    cases = []
    for i in range(36):
        g = random_graph(rng, requantize=i % 2 == 1, axes=AXES[i % len(AXES)],
                         shape=(1, 37) if i == 35 else None)
        cases.append((g, rng.integers(-128, 128, (64, *g.input.shape[1:])).astype(np.int8)))
    g = random_graph(rng, requantize=True, shape=(1, 25, 5, 64))
    cases.append((g, np.stack([np.full((25, 5, 64), v, np.int8) for v in (-128, 127)])))
    opkit.assert_c_matches_reference(cases)
    opkit.arm_compiles(cases[:4])


def test_axes_beyond_the_rank_are_rejected():
    g = mean_graph((1, 4, 4, 2), (0.1, 0), (0.1, 0))
    g.ops[0].attrs["axes"] = (4,)
    with pytest.raises(TinydsError, match=r"mean over axes \(4,\) of a 4-D tensor"):
        mean.c_params(g, g.ops[0])


def test_tflite_round_trip_keeps_the_axes(tmp_path):
    from tinyds.export_tflite import write_tflite
    from tinyds.frontends.tflite import load_tflite
    from tinyds.requant import derive_int_params

    rng = np.random.default_rng(34)
    for i, axes in enumerate(AXES[2:]):
        g = derive_int_params(random_graph(rng, requantize=True, axes=axes))
        back = load_tflite(write_tflite(g, tmp_path / f"m{i}.tflite"))
        assert back.ops[0].attrs["axes"] == tuple(sorted(a % 4 for a in axes))
        x = rng.integers(-128, 128, (10, *g.input.shape[1:])).astype(np.int8)
        np.testing.assert_array_equal(mean.reference(back, back.ops[0], x),
                                      mean.reference(g, g.ops[0], x))
