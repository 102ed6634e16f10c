"""avg_pool2d: reference vs PyTorch, vs TFLite Micro itself, and generated C vs reference."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyds.errors import TinydsError
from tinyds.ir import Graph, Op, Tensor
from tinyds.ops import avg_pool2d
from tinyds.requant import derive_int_params
from tinyds.window import output_size

import opkit as kit
from oputil import qemu_cases, tflm


def act(name, shape, scale, zp):
    return Tensor(name, tuple(shape), "int8", scale=np.array([scale], np.float32),
                  zero_point=np.array([zp], np.int64))


def pool_graph(x_shape, kernel, stride, padding, activation="none", scale=0.05, zp=0,
               op_type="avg_pool2d", out_q=None):
    oh = output_size(x_shape[1], kernel[0], stride[0], 1, padding[0], padding[2])
    ow = output_size(x_shape[2], kernel[1], stride[1], 1, padding[1], padding[3])
    x, y = act("x", x_shape, scale, zp), act("y", (1, oh, ow, x_shape[3]), *(out_q or (scale, zp)))
    op = Op(op_type, "pool", ["x"], ["y"], dict(kernel=tuple(kernel), stride=tuple(stride),
                                                padding=tuple(padding), activation=activation))
    return derive_int_params(Graph("t", {"x": x, "y": y}, [op], ["x"], ["y"]))


def random_case(rng, same_or_valid=False):
    kh, kw = (int(v) for v in rng.integers(1, 8, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    h, w = int(rng.integers(kh, kh + 9)), int(rng.integers(kw, kw + 9))
    if same_or_valid and rng.random() < 0.5:
        pad = (0, 0, 0, 0)
    elif same_or_valid:
        th = max((-(-h // sh) - 1) * sh + kh - h, 0)
        tw = max((-(-w // sw) - 1) * sw + kw - w, 0)
        pad = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    else:
        pad = tuple(int(rng.integers(0, k)) for k in (kh, kw, kh, kw))
    g = pool_graph((1, h, w, int(rng.integers(1, 9))), (kh, kw), (sh, sw), pad,
                   str(rng.choice(["none", "relu", "relu6"])),
                   scale=float(10 ** rng.uniform(-2, -0.5)), zp=int(rng.integers(-128, 128)))
    x = rng.integers(-128, 128, (int(rng.integers(1, 6)), h, w, g.input.shape[3]))
    return g, x.astype(np.int8)


def torch_mean(g, x):
    """Exact mean of the in-bounds raw values: integer sums (sum pooling) over counts."""
    a = g.ops[0].attrs
    pt, pl, pb, pr = a["padding"]
    xt = torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2)
    k = a["kernel"][0] * a["kernel"][1]

    def pooled_sum(t):
        return torch.round(F.avg_pool2d(F.pad(t, (pl, pr, pt, pb)), a["kernel"], a["stride"]) * k)

    return (pooled_sum(xt) / pooled_sum(torch.ones_like(xt))).permute(0, 2, 3, 1).numpy()


def test_reference_is_tflite_rounding_of_the_exact_mean():
    """Input and output share quantization, so the float result is the mean of the raw
    values; TFLite rounds it half away from zero. Checked exactly, not within 1 LSB."""
    rng = np.random.default_rng(0)
    ties = 0
    for _ in range(40):
        g, x = random_case(rng)
        op = g.ops[0]
        m = torch_mean(g, x)
        ties += int(np.sum(np.abs(m - np.trunc(m)) == 0.5))
        want = np.clip(np.sign(m) * np.floor(np.abs(m) + 0.5), op.attrs["act_min"], op.attrs["act_max"])
        got = avg_pool2d.reference(g, op, x)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want)
    assert ties > 50  # the half-away-from-zero rule was really exercised


def test_matches_tflite_micro():
    rng = np.random.default_rng(1)
    for _ in range(12):
        g, x = random_case(rng, same_or_valid=True)
        np.testing.assert_array_equal(avg_pool2d.reference(g, g.ops[0], x), tflm(g, x))


def test_generated_c_matches_reference(opkit):
    rng = np.random.default_rng(2)
    cases = []
    for _ in range(40):
        g, _ = random_case(rng)
        cases.append((g, rng.integers(-128, 128, (64, *g.input.shape[1:])).astype(np.int8)))
    # global pooling of a KWS-sized map and the extremes of the int8 range
    g = pool_graph((1, 25, 5, 64), (25, 5), (1, 1), (0, 0, 0, 0))
    cases.append((g, np.stack([np.full((25, 5, 64), v, np.int8) for v in (-128, 127, -1, 0)])))
    for (g, x), got in zip(cases, opkit.run_kernels(cases)):
        np.testing.assert_array_equal(got, avg_pool2d.reference(g, g.ops[0], x))
    assert np.array_equal(got[:2, 0, 0, 0], [-128, 127])
    opkit.arm_compiles(cases[:5])


def test_window_entirely_in_padding_is_rejected():
    g = pool_graph((1, 4, 4, 1), (2, 2), (3, 3), (0, 0, 0, 0))
    g.ops[0].attrs["padding"] = (0, 0, 4, 0)  # the third window row covers padding only
    g.tensors["y"].shape = (1, 3, 1, 1)
    with pytest.raises(TinydsError, match="no input pixel"):
        avg_pool2d.c_params(g, g.ops[0])


def test_requantizing_pool_is_rejected():
    g = pool_graph((1, 4, 4, 1), (2, 2), (2, 2), (0, 0, 0, 0), out_q=(0.1, 5))
    with pytest.raises(TinydsError, match="differ"):
        avg_pool2d.reference(g, g.ops[0], np.zeros((1, 4, 4, 1), np.int8))


def test_macs_counts_every_tap():
    g = pool_graph((1, 8, 8, 3), (2, 2), (2, 2), (0, 0, 0, 0))
    assert avg_pool2d.macs(g, g.ops[0]) == 4 * 4 * 3 * 4


def simd_cases(rng, n):
    """Pools the SXTAB16 path takes (channels in fours or eights), and a 16x16
    global pool at the int8 extremes: 256 taps of -128 sum to -32768, the last
    value an int16 half holds."""
    cases = []
    while len(cases) < n:
        g, _ = random_case(rng)
        c = 8 if len(cases) % 2 else 4
        kh, kw = g.ops[0].attrs["kernel"]
        g = pool_graph((1, *g.input.shape[1:3], c), (kh, kw), g.ops[0].attrs["stride"],
                       g.ops[0].attrs["padding"], g.ops[0].attrs["activation"],
                       *g.input.qparams)
        cases.append((g, rng.integers(-128, 128, (16, *g.input.shape[1:])).astype(np.int8)))
    g = pool_graph((1, 16, 16, 12), (16, 16), (1, 1), (0, 0, 0, 0))
    cases.append((g, np.stack([np.full((16, 16, 12), v, np.int8) for v in (-128, 127, -1)])))
    return cases


def test_simd_path_matches_reference(opkit):
    """The DSP cores' pooling (two SXTAB16 per word of four channels) through its C
    twins; which pools take it."""
    from tinyds.kernels import KernelOptions, choose
    cases = simd_cases(np.random.default_rng(5), 24)
    assert all(choose(g, g.ops[0], opkit.DSP).params["simd"] for g, _ in cases)
    got = opkit.run_kernels(cases, target=opkit.DSP)
    for (g, x), y in zip(cases, got):
        np.testing.assert_array_equal(y, avg_pool2d.reference(g, g.ops[0], x))
    assert got[-1][:2, 0, 0, 0].tolist() == [-128, 127]
    opkit.arm_compiles(cases[:6], target=opkit.DSP)
    big = pool_graph((1, 17, 16, 4), (17, 16), (1, 1), (0, 0, 0, 0))     # 272 taps
    assert not choose(big, big.ops[0], opkit.DSP).params["simd"]
    six = pool_graph((1, 4, 4, 6), (2, 2), (2, 2), (0, 0, 0, 0))
    assert not choose(six, six.ops[0], opkit.DSP).params["simd"]
    assert not choose(cases[0][0], cases[0][0].ops[0], KernelOptions()).params["simd"]


@qemu_cases("stm32f4")
def m4_simd_cases():
    return simd_cases(np.random.default_rng(6), 8)


@pytest.mark.slow
def test_simd_path_on_cortex_m4_in_qemu(qemu_sweep):
    kit.assert_sweep_matches_reference(qemu_sweep(m4_simd_cases))
