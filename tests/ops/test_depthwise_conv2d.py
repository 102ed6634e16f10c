"""depthwise_conv2d: integer reference vs PyTorch float, generated C vs reference bit for bit."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import opkit as kit
from oputil import qemu_cases
from tinyds.ir import Graph, Op, Tensor
from tinyds.ops import depthwise_conv2d


def random_case(opkit, rng, *, small=False, channels=None, multiplier=None, padding_style=None):
    """A random depthwise layer (channel multiplier 1-3) and a batch of 4 inputs."""
    (h, w_, kh, kw), attrs = opkit.random_window(rng, padding_style=padding_style)
    c = channels or int(rng.integers(1, 11))
    m = multiplier or int(rng.choice([1, 1, 2, 3]))
    attrs["depth_multiplier"] = m
    q = opkit.random_scales(rng, kh * kw, c * m, small)
    spread = int(q.pop("spread"))
    w, x = opkit.random_operands(rng, (1, kh, kw, c * m), (4, h, w_, c), q["zp_in"], small)
    bias = rng.integers(-4 * spread, 4 * spread + 1, c * m) if rng.random() < 0.7 else None
    return opkit.graph("depthwise_conv2d", (1, h, w_, c), w, bias, attrs, **q), x


def torch_float(opkit, g, x):
    """Dequantize, grouped F.conv2d (groups = C) in float64, requantize round-to-nearest."""
    op = g.ops[0]
    s_in, zp_in = g.input.qparams
    wt = g.tensors["w"]
    s_w = wt.scale.astype(np.float64)
    xf = torch.tensor((x.astype(np.float64) - zp_in) * s_in).permute(0, 3, 1, 2)
    # (1, KH, KW, C*M) -> (C*M, 1, KH, KW); torch's group of output o is input o // M
    wf = torch.tensor(wt.data.astype(np.float64) * s_w).permute(3, 0, 1, 2)
    bf = torch.tensor(g.tensors["b"].data * s_in * s_w) if "b" in g.tensors else None
    pt, pl, pb, pr = op.attrs["padding"]
    y = F.conv2d(F.pad(xf, (pl, pr, pt, pb)), wf, bf, stride=op.attrs["stride"],
                 dilation=op.attrs["dilation"], groups=x.shape[3])
    return opkit.quantize(y.permute(0, 2, 3, 1).numpy(), *g.output.qparams,
                          op.attrs["act_min"], op.attrs["act_max"])


def test_reference_matches_torch_within_one_lsb(opkit):
    rng = np.random.default_rng(11)
    exact = total = inside = left_shifts = multipliers = 0
    for i in range(36):
        g, x = random_case(opkit, rng, small=i % 3 == 1)
        op = g.ops[0]
        got = depthwise_conv2d.reference(g, op, x).astype(np.int64)
        want = torch_float(opkit, g, x)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1, f"case {i}: {op.attrs}"
        exact += int((got == want).sum())
        total += got.size
        inside += int(((got > op.attrs["act_min"]) & (got < op.attrs["act_max"])).sum())
        left_shifts += int((op.attrs["shift"] > 0).any())
        multipliers += op.attrs["depth_multiplier"] > 1
    assert exact / total > 0.97
    assert inside / total > 0.35
    assert left_shifts >= 6 and multipliers >= 6


def test_reference_by_hand():
    """Two input channels, multiplier 2, 1x2 kernel, left padding 1: worked on paper."""
    x = Tensor("x", (1, 1, 2, 2), "int8", scale=np.array([1.0], np.float32),
               zero_point=np.array([2]))
    y = Tensor("y", (1, 1, 2, 4), "int8", scale=np.array([1.0], np.float32),
               zero_point=np.array([0]))
    w = Tensor("w", (1, 1, 2, 4), "int8",
               data=np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int8).reshape(1, 1, 2, 4),
               scale=np.ones(4, np.float32), zero_point=np.zeros(4, np.int64), axis=3)
    op = Op("depthwise_conv2d", "d", ["x", "w", ""], ["y"], dict(
        stride=(1, 1), dilation=(1, 1), padding=(0, 1, 0, 0), depth_multiplier=2,
        activation="none", multiplier=np.full(4, 1 << 30, np.int32),
        shift=np.full(4, 1, np.int32), act_min=-128, act_max=127))   # real scale 1.0
    g = Graph("t", {t.name: t for t in (x, y, w)}, [op], ["x"], ["y"])
    xs = np.array([[3, 4], [5, 6]], np.int8).reshape(1, 1, 2, 2)    # pixels (c0, c1)
    # x - zp: pixel0 = (1, 2), pixel1 = (3, 4). Output channel c*2+m reads channel c.
    # out px0 (left tap is padding): w[kx=1] * px0 -> 5*1, 6*1, 7*2, 8*2
    # out px1: w[0]*px0 + w[1]*px1 -> 1*1+5*3, 2*1+6*3, 3*2+7*4, 4*2+8*4
    want = [[5, 6, 14, 16], [16, 20, 34, 40]]
    assert depthwise_conv2d.reference(g, op, xs).reshape(2, 4).tolist() == want
    assert depthwise_conv2d.macs(g, op) == 2 * 8


def sweep(opkit, seed, n):
    rng = np.random.default_rng(seed)
    cases = [random_case(opkit, rng, small=i % 4 == 3) for i in range(n - 4)]
    # the 4-channel blocks and their tails, and a deep multiplier
    cases += [random_case(opkit, rng, channels=c, multiplier=m)
              for c, m in ((4, 1), (9, 1), (16, 1), (3, 8))]
    return cases


def test_c_matches_reference_bit_exactly(opkit):
    cases = sweep(opkit, 12, 40)
    opkit.assert_c_matches_reference(cases)


def test_sweep_runs_the_plane_path_and_big_planes_fall_back(opkit):
    picks = [depthwise_conv2d.c_params(g, g.ops[0])["plane"] for g, _ in sweep(opkit, 12, 40)]
    assert all(picks)
    wide = opkit.graph("depthwise_conv2d", (1, 40, 40, 2), np.ones((1, 3, 3, 2)), None,
                       dict(stride=(1, 1), dilation=(1, 1), padding=(1, 1, 1, 1),
                            activation="none", depth_multiplier=1),
                       s_in=0.1, zp_in=0, s_w=0.1, s_out=0.1, zp_out=0)
    assert not depthwise_conv2d.c_params(wide, wide.ops[0])["plane"]


def test_c_without_plane(opkit, monkeypatch):
    """The per-pixel kernel (interior and border blocks) that layers whose plane
    would exceed MAX_PLANE_BYTES run."""
    monkeypatch.setattr(depthwise_conv2d, "MAX_PLANE_BYTES", 0)
    cases = sweep(opkit, 16, 24)
    assert not any(depthwise_conv2d.c_params(g, g.ops[0])["plane"] for g, _ in cases)
    opkit.assert_c_matches_reference(cases)


def test_c_without_folded_offset(opkit, monkeypatch):
    """The per-pixel kernel variant that adds the input offset per MAC (used when the
    folded bias would leave int32) on layers that would normally fold it."""
    monkeypatch.setattr(depthwise_conv2d, "MAX_PLANE_BYTES", 0)
    monkeypatch.setattr(depthwise_conv2d, "fold_bias", lambda *args: None)
    rng = np.random.default_rng(24)
    cases = [random_case(opkit, rng, padding_style="valid") for i in range(10)]
    assert not any(depthwise_conv2d.c_params(g, g.ops[0])["fold"] for g, _ in cases)
    opkit.assert_c_matches_reference(cases)


def test_c_compiles_for_cortex_m4(opkit):
    opkit.arm_compiles(sweep(opkit, 13, 8))


@qemu_cases("stm32f4")
def m4_cases():
    return sweep(kit, 15, 12)


@pytest.mark.slow
def test_c_matches_reference_on_cortex_m4_in_qemu(qemu_sweep):
    """The Cortex-M4 build, where the DSP (SXTB16/SMLAD) loops are compiled in."""
    kit.assert_sweep_matches_reference(qemu_sweep(m4_cases))


def wide_case(opkit, rng, width, stride, wide_shifts=False):
    """A 3x3 layer on a wide input: the plane gather's unrolled loop and its tail;
    wide_shifts: channel scales 1000x apart (a shift per channel)."""
    c = 5
    w = rng.integers(-127, 128, (1, 3, 3, c))
    q = opkit.random_scales(rng, 9, c, False)
    q.pop("spread")
    if wide_shifts:
        q["s_w"][::2] *= 1e-3
    x = rng.integers(-128, 128, (3, 6, width, c)).astype(np.int8)
    return opkit.graph("depthwise_conv2d", (1, 6, width, c), w, rng.integers(-500, 500, c),
                       dict(stride=(stride, stride), dilation=(1, 1), padding=(1, 1, 1, 1),
                            depth_multiplier=1, activation="relu"), **q), x


def asm_case(opkit, rng, h, w, c, kw=3, dil_w=1, stride=1):
    """A 3-row kernel at stride 1 or an even one under a ReLU at zero point -128:
    the assembly loops (two rows per step, or one)."""
    wt = rng.integers(-127, 128, (1, 3, kw, c))
    q = opkit.random_scales(rng, 3 * kw, c, False)
    q.pop("spread")
    q["zp_out"] = -128
    x = rng.integers(-128, 128, (3, h, w, c)).astype(np.int8)
    return opkit.graph("depthwise_conv2d", (1, h, w, c), wt, rng.integers(-900, 900, c),
                       dict(stride=(stride, stride), dilation=(1, dil_w), padding=(1, 1, 1, 1),
                            depth_multiplier=1, activation="relu"), **q), x


def fast_sweep(opkit, seed, n):
    """Layers the fast kernel takes (multiplier 1, vertical dilation 1, vertical
    stride 1 or even), over kernel sizes, strides, paddings and requant variants,
    and two wide inputs (more than 16 columns to gather)."""
    rng = np.random.default_rng(seed)
    cases = [wide_case(opkit, rng, 37, 1), wide_case(opkit, rng, 48, 2, wide_shifts=True),
             # the assembly loops: odd and even numbers of row pairs, an odd last row,
             # a 3x2 kernel, a dilated one; stride 2 with 5 and 4 output rows, stride 4
             asm_case(opkit, rng, 6, 5, 4), asm_case(opkit, rng, 9, 4, 3),
             asm_case(opkit, rng, 8, 7, 2, kw=2), asm_case(opkit, rng, 7, 9, 3, dil_w=2),
             asm_case(opkit, rng, 9, 6, 3, stride=2), asm_case(opkit, rng, 8, 8, 2, stride=2),
             asm_case(opkit, rng, 13, 5, 2, stride=4)]
    while len(cases) < n:
        g, x = random_case(opkit, rng, multiplier=1, small=len(cases) % 5 == 4,
                           channels=int(rng.integers(1, 13)))
        op = g.ops[0]
        (sh, _), (dh, _) = op.attrs["stride"], op.attrs["dilation"]
        if dh == 1 and (sh == 1 or sh % 2 == 0):
            if len(cases) % 3 == 0:      # a ReLU at zero point -128: the unclamped variant
                g = relu_at_minus_128(opkit, g)
            cases.append((g, x))
    return cases


def relu_at_minus_128(opkit, g):
    op, wt = g.ops[0], g.tensors["w"]
    attrs = {k: op.attrs[k] for k in ("stride", "dilation", "padding", "depth_multiplier")}
    s_in, zp_in = g.input.qparams
    bias = g.tensors["b"].data if "b" in g.tensors else None
    return opkit.graph("depthwise_conv2d", g.input.shape, wt.data, bias,
                       {**attrs, "activation": "relu"}, s_in=s_in, zp_in=zp_in, s_w=wt.scale,
                       s_out=g.output.qparams[0], zp_out=-128)


def fast_kinds(opkit, cases):
    from tinyds.kernels import choose
    return [choose(g, g.ops[0], opkit.DSP).params.get("requant", "portable") for g, _ in cases]


def test_fast_kernel_matches_reference(opkit):
    """The int16-plane path through its C twins, out of place and in place."""
    from tinyds.kernels import choose
    cases = fast_sweep(opkit, 40, 36)
    assert {"fast", "fast_clamp", "fast_var", "tflite"} <= set(fast_kinds(opkit, cases))
    asm = [choose(g, g.ops[0], opkit.DSP).params for g, _ in cases]
    assert {p["pairs"] for p in asm if p["asm"]} == {True, False}
    assert sum(p["asm"] for p in asm) >= 7
    assert "portable" not in fast_kinds(opkit, cases)
    opkit.assert_c_matches_reference(cases, target=opkit.DSP)
    opkit.assert_c_matches_reference(cases, target=opkit.DSP, inplace=True)


def test_fast_kernel_selection(opkit):
    from tinyds.kernels import KernelOptions, choose
    rng = np.random.default_rng(41)
    common = dict(s_in=0.05, zp_in=3, s_w=0.01, s_out=0.05, zp_out=-128)

    def pick(m=1, stride=(1, 1), dilation=(1, 1), target=opkit.DSP):
        w = rng.integers(-127, 128, (1, 3, 3, 4 * m))
        g = opkit.graph("depthwise_conv2d", (1, 9, 9, 4), w, None, dict(
            stride=stride, dilation=dilation, padding=(1, 1, 1, 1), depth_multiplier=m,
            activation="relu"), **common)
        k = choose(g, g.ops[0], target)
        return k.template, k.params.get("pairs"), k.inplace

    assert pick() == ("depthwise_conv2d_dsp", True, "channels")        # two rows per step
    assert pick(stride=(2, 2)) == ("depthwise_conv2d_dsp", False, "channels")
    assert pick(stride=(1, 3), dilation=(1, 2))[0] == "depthwise_conv2d_dsp"
    assert pick(m=2)[0] == "depthwise_conv2d"
    assert pick(stride=(3, 1))[0] == "depthwise_conv2d"
    assert pick(dilation=(2, 1))[0] == "depthwise_conv2d"
    assert pick(target=KernelOptions())[0] == "depthwise_conv2d"


def test_fast_3x3_column_needs_two_weight_words():
    """The lone end taps of a 3x3 column borrow halves: SMLAD, SMLABT / SMLATB, SMLAD."""
    wt = np.arange(1, 10).reshape(1, 3, 3)
    macs, stream = depthwise_conv2d.column_macs(wt, pairs=True, words=2)
    assert stream.shape == (1, 2, 3)
    # word 0 = (w0, w1), word 1 = (w1, w2) of column kx = 0: taps 1, 4, 7
    assert stream[0, :, 0].tolist() == [1 | 4 << 16, 4 | 7 << 16]
    assert macs == [("upper", "smlad", 0, 0), ("upper", "smlabt", 1, 1),
                    ("lower", "smlatb", 0, 0), ("lower", "smlad", 1, 1)]


def test_fast_kernel_compiles_for_cortex_m4(opkit):
    opkit.arm_compiles(fast_sweep(opkit, 42, 8), target=opkit.DSP)


@qemu_cases("stm32f4")
def m4_fast_cases():
    return fast_sweep(kit, 43, 14)


@pytest.mark.slow
def test_fast_kernel_on_cortex_m4_in_qemu(qemu_sweep):
    """The assembly loops (the first cases of the sweep) and the C ones on the Cortex-M4."""
    kit.assert_sweep_matches_reference(qemu_sweep(m4_fast_cases))


@qemu_cases("cortex-m0plus")
def m0plus_cases():
    return sweep(kit, 17, 10)


@pytest.mark.slow
def test_c_matches_reference_on_cortex_m0plus_in_qemu(qemu_sweep):
    """The ARMv6-M build (narrow requantization multiply), plane and per-pixel kernels."""
    kit.assert_sweep_matches_reference(qemu_sweep(m0plus_cases))
