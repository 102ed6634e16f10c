"""softmax: the gemmlowp pieces vs float, the reference vs float softmax and vs TFLite
Micro itself over every input range, and the generated C vs the reference."""
import numpy as np
import pytest
import torch

from test_avg_pool2d import act, tflm
from tinyds.errors import TinydsError
from tinyds.ir import Graph, Op
from tinyds.ops import softmax
from tinyds.requant import derive_int_params


def softmax_graph(shape, scale, zp=0, beta=1.0):
    x, y = act("x", shape, scale, zp), act("y", shape, 1 / 256, -128)
    op = Op("softmax", "probs", ["x"], ["y"], {"beta": beta})
    return derive_int_params(Graph("t", {"x": x, "y": y}, [op], ["x"], ["y"]))


def random_inputs(rng, n, shape):
    """Uniform bytes, narrow clusters, one dominant logit, all equal, extremes."""
    depth = shape[-1]
    kinds = [rng.integers(-128, 128, (n, *shape[1:])),
             np.clip(rng.integers(-128, 128, (n, *shape[1:-1], 1)) + rng.integers(-3, 4, (n, *shape[1:])), -128, 127),
             np.full((n, *shape[1:]), int(rng.integers(-128, 128)))]
    spike = rng.integers(-128, -100, (n, *shape[1:]))
    spike[..., int(rng.integers(depth))] = 127
    kinds.append(spike)
    extremes = rng.choice([-128, 127], (n, *shape[1:]))
    kinds.append(extremes)
    return np.concatenate(kinds).astype(np.int8)


def test_exp_and_reciprocal_match_float():
    a = -np.arange(0, 31 << 26, 997_331, dtype=np.int64)          # Q5.26 in (-31, 0]
    got = softmax.exp_on_negative_values(a) / 2.0 ** 31
    assert np.abs(got - np.exp(a / 2.0 ** 26)).max() < 3e-7  # gemmlowp: ~2^-22, far below 1/256
    x = np.arange(0, 1 << 31, 1_048_573, dtype=np.int64)           # Q0.31 in [0, 1)
    got = softmax.one_over_one_plus_x_for_x_in_0_1(x) / 2.0 ** 31
    assert np.abs(got - 1 / (1 + x / 2.0 ** 31)).max() < 1e-8   # a few LSBs of Q2.29
    total = np.array([1 << 19, 3 << 19, 511 << 19, 1 << 20], np.int64)   # Q12.19
    recip, bits = softmax.get_reciprocal(total)
    np.testing.assert_allclose(recip / 2.0 ** 31 * 2.0 ** -bits, 2.0 ** 19 / total, rtol=1e-8)


@pytest.mark.parametrize("scale", [0.004, 0.03, 0.1, 0.5, 2.0])
def test_reference_close_to_float_softmax(scale):
    rng = np.random.default_rng(int(scale * 1000))
    g = softmax_graph((1, 12), scale, zp=int(rng.integers(-128, 128)))
    x = random_inputs(rng, 400, (1, 12))
    got = softmax.reference(g, g.ops[0], x).astype(np.int64)
    p = torch.softmax(torch.tensor(x, dtype=torch.float64) * np.float32(scale), -1).numpy()
    want = np.clip(np.round(p * 256) - 128, -128, 127)
    err = np.abs(got - want)
    assert err.max() <= 1, (scale, err.max())
    assert (err == 0).mean() > 0.97


def test_rows_are_independent_and_in_last_axis():
    g = softmax_graph((1, 3, 4, 5), 0.2)
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (6, 3, 4, 5)).astype(np.int8)
    flat = softmax_graph((1, 5), 0.2)
    want = softmax.reference(flat, flat.ops[0], x.reshape(-1, 5)).reshape(x.shape)
    np.testing.assert_array_equal(softmax.reference(g, g.ops[0], x), want)


def test_matches_tflite_micro_over_scales_and_ranges():
    """The referee: TFLM's own int8 softmax re-derives its params from our float scales."""
    rng = np.random.default_rng(4)
    for scale in [*10 ** rng.uniform(-3, 1.5, 10), 100.0]:  # 100: the multiplier saturates
        depth = int(rng.choice([2, 3, 10, 12, 37, 200]))
        g = softmax_graph((1, depth), float(scale), zp=int(rng.integers(-128, 128)),
                          beta=float(rng.choice([1.0, 0.5, 2.0])))
        x = random_inputs(rng, 40, (1, depth))
        np.testing.assert_array_equal(softmax.reference(g, g.ops[0], x), tflm(g, x),
                                      err_msg=f"scale {scale} depth {depth}")


def test_matches_tflite_micro_on_every_pair():
    """Depth 2, all 65536 input pairs, at a scale where the diff_min cut is live."""
    g = softmax_graph((1, 2), 0.25)
    assert g.ops[0].attrs["diff_min"] > -255
    x = np.stack(np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)), -1).reshape(-1, 2)
    x = x.astype(np.int8)
    np.testing.assert_array_equal(softmax.reference(g, g.ops[0], x), tflm(g, x))


def test_generated_c_matches_reference(opkit):
    rng = np.random.default_rng(5)
    cases = []
    for scale in [1e-3, 0.01, 0.05, 0.1, 0.3, 1.0, 4.0, 30.0, 100.0]:
        for shape in [(1, 1), (1, 2), (1, 12), (1, 7, 9), (1, 511)]:
            g = softmax_graph(shape, scale, zp=int(rng.integers(-128, 128)),
                              beta=float(rng.choice([1.0, 0.7])))
            cases.append((g, random_inputs(rng, 40, shape)))
    opkit.assert_c_matches_reference(cases)
    opkit.arm_compiles(cases[:3])


def test_two_softmax_layers_share_one_set_of_helpers(opkit):
    g1, g2 = softmax_graph((1, 4), 0.1), softmax_graph((1, 6), 0.02)
    x1 = np.array([[1, 2, 3, 4]], np.int8)
    x2 = np.array([[-128, 127, 0, 5, 5, 9]], np.int8)
    y1, y2 = opkit.run_kernels([(g1, x1), (g2, x2)])
    np.testing.assert_array_equal(y1, softmax.reference(g1, g1.ops[0], x1))
    np.testing.assert_array_equal(y2, softmax.reference(g2, g2.ops[0], x2))


def test_uniform_row_gives_one_over_depth():
    g = softmax_graph((1, 4), 0.1)
    y = softmax.reference(g, g.ops[0], np.full((1, 4), 17, np.int8))
    assert y.tolist() == [[-64] * 4]  # 0.25 * 256 - 128


def test_unsupported_quantization_and_depth_are_rejected():
    g = softmax_graph((1, 4), 0.1)
    g.tensors["y"].zero_point = np.array([0], np.int64)
    with pytest.raises(TinydsError, match="1/256"):
        softmax.c_params(g, g.ops[0])
    with pytest.raises(TinydsError, match="classes"):
        softmax.c_params(softmax_graph((1, 512), 0.1), Op("softmax", "p", ["x"], ["y"], {}))
