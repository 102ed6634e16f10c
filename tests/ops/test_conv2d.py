"""conv2d: integer reference vs PyTorch float, generated C vs reference bit for bit."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import opkit as kit
from oputil import qemu_cases
from tinyds.ops import conv2d


def random_case(opkit, rng, *, pointwise=False, small=False, out_c=None, zp_out=None,
                activation=None, wide_shifts=False, in_c=None):
    """A random conv2d layer and a batch of 4 inputs (see conftest.random_*)."""
    (h, w_, kh, kw), attrs = opkit.random_window(rng, pointwise=pointwise)
    ic, oc = in_c or int(rng.integers(1, 10)), out_c or int(rng.integers(1, 11))
    attrs["activation"] = activation or attrs["activation"]
    q = opkit.random_scales(rng, kh * kw * ic, oc, small)
    q["zp_out"] = q["zp_out"] if zp_out is None else zp_out
    if wide_shifts:       # every other channel 1000x smaller: shifts 10 apart in one layer
        q["s_w"][::2] *= 1e-3
    spread = int(q.pop("spread"))
    w, x = opkit.random_operands(rng, (oc, kh, kw, ic), (4, h, w_, ic), q["zp_in"], small)
    bias = rng.integers(-4 * spread, 4 * spread + 1, oc) if rng.random() < 0.7 else None
    return opkit.graph("conv2d", (1, h, w_, ic), w, bias, attrs, **q), x


def torch_float(opkit, g, x):
    """Dequantize, F.conv2d in float64, requantize with round-to-nearest."""
    op = g.ops[0]
    s_in, zp_in = g.input.qparams
    wt = g.tensors["w"]
    s_w = wt.scale.astype(np.float64)
    xf = torch.tensor((x.astype(np.float64) - zp_in) * s_in).permute(0, 3, 1, 2)
    wf = torch.tensor(wt.data.astype(np.float64) * s_w[:, None, None, None]).permute(0, 3, 1, 2)
    bf = torch.tensor(g.tensors["b"].data * s_in * s_w) if "b" in g.tensors else None
    pt, pl, pb, pr = op.attrs["padding"]
    y = F.conv2d(F.pad(xf, (pl, pr, pt, pb)), wf, bf, stride=op.attrs["stride"],
                 dilation=op.attrs["dilation"])
    return opkit.quantize(y.permute(0, 2, 3, 1).numpy(), *g.output.qparams,
                          op.attrs["act_min"], op.attrs["act_max"])


def test_reference_matches_torch_within_one_lsb(opkit):
    rng = np.random.default_rng(1)
    exact = total = inside = left_shifts = 0
    for i in range(36):
        g, x = random_case(opkit, rng, pointwise=i % 6 == 0, small=i % 3 == 1)
        op = g.ops[0]
        got = conv2d.reference(g, op, x).astype(np.int64)
        want = torch_float(opkit, g, x)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1, f"case {i}: {op.attrs}"
        exact += int((got == want).sum())
        total += got.size
        inside += int(((got > op.attrs["act_min"]) & (got < op.attrs["act_max"])).sum())
        left_shifts += int((op.attrs["shift"] > 0).any())
    assert exact / total > 0.97          # double rounding differs only on near-ties
    assert inside / total > 0.35         # the cases exercise arithmetic, not just the clamps
    assert left_shifts >= 6


def test_reference_by_hand():
    """2x2 input, one 2x2 filter, no padding: one output worked out on paper."""
    from tinyds.ir import Graph, Op, Tensor
    x = Tensor("x", (1, 2, 2, 1), "int8", scale=np.array([0.5], np.float32),
               zero_point=np.array([-1]))
    y = Tensor("y", (1, 1, 1, 1), "int8", scale=np.array([1.0], np.float32),
               zero_point=np.array([3]))
    w = Tensor("w", (1, 2, 2, 1), "int8", data=np.array([1, -2, 3, 4], np.int8).reshape(1, 2, 2, 1),
               scale=np.array([0.25], np.float32), zero_point=np.zeros(1, np.int64), axis=0)
    b = Tensor("b", (1,), "int32", data=np.array([10], np.int32))
    op = Op("conv2d", "c", ["x", "w", "b"], ["y"], dict(
        stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0), activation="none",
        multiplier=np.array([1 << 30], np.int32), shift=np.array([-2], np.int32),
        act_min=-128, act_max=127))
    g = Graph("t", {t.name: t for t in (x, y, w, b)}, [op], ["x"], ["y"])
    xs = np.array([5, 6, 7, 8], np.int8).reshape(1, 2, 2, 1)
    # (5+1)*1 + (6+1)*-2 + (7+1)*3 + (8+1)*4 + 10 = 6 - 14 + 24 + 36 + 10 = 62
    # multiplier 2^30 * 2^(-2-31) = 0.125: 62 * 0.125 = 7.75 -> 8, + zp 3 = 11
    assert conv2d.reference(g, op, xs).item() == 11
    # padding 1 all round: the top-left window sees only x[0,0] under w[1,1]:
    # 6*4 + 10 = 34 -> 4.25 -> 4, + 3 = 7
    op.attrs["padding"] = (1, 1, 1, 1)
    assert conv2d.reference(g, op, xs)[0, 0, 0, 0] == 7
    assert conv2d.macs(g, op) == 4


def test_c_params_decisions(opkit):
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 2))
    common = dict(s_in=0.1, zp_in=7, s_w=0.01, s_out=0.2, zp_out=0)
    # TFLite SAME, stride 2, even input: no top/left padding, bottom/right only
    g = opkit.graph("conv2d", (1, 8, 8, 2), w, None, dict(stride=(2, 2), dilation=(1, 1),
                    padding=(0, 0, 1, 1), activation="relu"), **common)
    p = conv2d.c_params(g, g.ops[0])
    assert (p["clip_h"], p["clip_w"], p["fold"], p["pointwise"]) == (True, True, False, False)
    # padding that no window ever reaches (stride skips it) needs no bounds, so the offset folds
    g = opkit.graph("conv2d", (1, 9, 8, 2), w, [1, 2, 3, 4], dict(
        stride=(2, 2), dilation=(1, 1), padding=(0, 0, 1, 0), activation="none"), **common)
    p = conv2d.c_params(g, g.ops[0])
    assert g.output.shape == (1, 4, 3, 4)
    assert (p["clip_h"], p["clip_w"], p["fold"]) == (False, False, True)
    assert p["bias"] == [b - 7 * int(s) for b, s in zip([1, 2, 3, 4], w.sum(axis=(1, 2, 3)))]
    g = opkit.graph("conv2d", (1, 5, 5, 2), w[:, :1, :1], None, dict(
        stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0), activation="none"), **common)
    assert conv2d.c_params(g, g.ops[0])["pointwise"]
    assert conv2d.macs(g, g.ops[0]) == 25 * 4 * 2


def sweep(opkit, seed, n):
    rng = np.random.default_rng(seed)
    return [random_case(opkit, rng, pointwise=i % 5 == 0, small=i % 4 == 3) for i in range(n)]


def test_c_matches_reference_bit_exactly(opkit):
    cases = sweep(opkit, 2, 40)
    opkit.assert_c_matches_reference(cases)


def test_c_without_folded_offset(opkit, monkeypatch):
    """The kernel variant that adds the input offset per MAC (used when the folded
    bias would leave int32) on layers that would normally fold it."""
    monkeypatch.setattr(conv2d, "fold_bias", lambda *args: None)
    rng = np.random.default_rng(24)
    cases = [random_case(opkit, rng, pointwise=i % 2 == 0) for i in range(10)]
    assert not any(conv2d.c_params(g, g.ops[0])["fold"] for g, _ in cases)
    opkit.assert_c_matches_reference(cases)


def test_c_dsp_path_matches_reference_bit_exactly(opkit):
    """The pointwise kernel's TINYDS_DSP path (two pixels by two channels, four input
    channels per SXTB16 + SMLAD step), which DSP cores compile in, run on the host
    through tinyds_dsp.h's C twins: odd and even pixel and channel counts, input
    channels past the last group of four."""
    rng = np.random.default_rng(26)
    cases = [random_case(opkit, rng, pointwise=True, small=i % 4 == 3,
                         in_c=int(rng.integers(4, 20))) for i in range(16)]
    opkit.assert_c_matches_reference(cases, cflags=opkit.DSP_PATH)


def test_c_compiles_for_cortex_m4(opkit):
    opkit.arm_compiles(sweep(opkit, 3, 8))


def test_grouped_conv_is_rejected(opkit):
    from tinyds.errors import TinydsError
    g = opkit.graph("conv2d", (1, 4, 4, 4), np.ones((2, 1, 1, 2)), None, dict(
        stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0), activation="none"),
        s_in=0.1, zp_in=0, s_w=0.1, s_out=0.1, zp_out=0)
    with pytest.raises(TinydsError, match="grouped conv2d"):
        conv2d.c_params(g, g.ops[0])


@qemu_cases("stm32f4")
def m4_cases():
    rng = np.random.default_rng(5)
    return [random_case(kit, rng, pointwise=i % 3 < 2, small=i % 4 == 3) for i in range(15)]


@pytest.mark.slow
def test_c_matches_reference_on_cortex_m4_in_qemu(qemu_sweep):
    """The Cortex-M4 build, where the DSP (SXTB16/SMLAD) loops are compiled in."""
    kit.assert_sweep_matches_reference(qemu_sweep(m4_cases))


def fast_sweep(opkit, seed, n):
    """Layers the fast kernel takes (output channels in fours), spread over its
    requantization variants: ReLU with zero point -128 ("fast"), ReLU/ReLU6 with
    another zero point ("fast_clamp"), shifts too far apart for one ("fast_var"),
    no activation or a left shift ("tflite"); the unclamped shift-per-channel
    variant (its own assembly core) at i = 4 mod 16; pointwise layers over 65-99
    input channels (more steps than the assembly cores' one-pass body) at i = 0
    mod 8 and 4 mod 32."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        act, zp = [("relu", -128), ("relu", None), ("relu6", None), ("none", None)][i % 4]
        wide = i % 8 == 0 or i % 32 == 4
        cases.append(random_case(opkit, rng, pointwise=wide or i % 3 == 0 or i % 16 == 4,
                                 small=i % 5 == 4,
                                 out_c=int(rng.choice([4, 8, 12, 16])), zp_out=zp, activation=act,
                                 wide_shifts=i % 4 == 1 or i % 16 == 4,
                                 in_c=int(rng.integers(65, 100)) if wide else None))
    return cases


def fast_cores(opkit, cases):
    """The assembly cores (unclamped requantization, stream-packed) the cases run:
    (requant kind, one pass)."""
    from tinyds.kernels import choose
    params = [choose(g, g.ops[0], opkit.DSP).params for g, _ in cases]
    return {(p["requant"], p["one_pass"]) for p in params if p.get("packed")}


ALL_CORES = {("fast", True), ("fast", False), ("fast_var", True), ("fast_var", False)}


def kinds(opkit, cases):
    from tinyds.kernels import choose
    return [choose(g, g.ops[0], opkit.DSP).params.get("requant", "portable") for g, _ in cases]


def test_fast_kernel_matches_reference(opkit):
    """The int16 GEMM path through its C twins, out of place and in place."""
    from tinyds.kernels import choose
    cases = fast_sweep(opkit, 30, 40)
    assert set(kinds(opkit, cases)) == {"fast", "fast_clamp", "fast_var", "tflite"}
    assert fast_cores(opkit, cases) == ALL_CORES
    modes = {choose(g, g.ops[0], opkit.DSP).inplace for g, _ in cases}
    assert modes == {"pixels", "window", "window_reverse"}, modes
    opkit.assert_c_matches_reference(cases, target=opkit.DSP)
    opkit.assert_c_matches_reference(cases, target=opkit.DSP, inplace=True)


def test_fast_kernel_selection(opkit):
    """Which layers take the fast kernel, and which requantization, and why."""
    from tinyds.kernels import KernelOptions, choose
    rng = np.random.default_rng(31)
    attrs = dict(stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0), activation="relu")
    common = dict(s_in=0.05, zp_in=3, s_w=0.01, s_out=0.5)

    def pick(w, target=opkit.DSP, **kw):
        g = opkit.graph("conv2d", (1, 5, 5, w.shape[3]), w, None, {**attrs, **kw.pop("a", {})},
                        **{**common, "zp_out": -128, **kw})
        k = choose(g, g.ops[0], target)
        return k.template, k.params.get("requant"), k.inplace

    w = rng.integers(-127, 128, (8, 1, 1, 16))
    assert pick(w) == ("conv2d_dsp", "fast", "pixels")
    assert pick(w, zp_out=-20) == ("conv2d_dsp", "fast_clamp", "pixels")
    assert pick(w, a={"activation": "none"}) == ("conv2d_dsp", "fast", "pixels")   # -128 clamps
    assert pick(w, a={"activation": "none"}, zp_out=-20)[1] == "tflite"
    assert pick(w, s_out=0.0001)[1] == "tflite"                     # left shift: e < 1
    assert pick(w, target=KernelOptions())[0] == "conv2d"                 # no DSP: portable
    assert pick(w, target=KernelOptions(dsp=True, optimize="size"))[0] == "conv2d"
    assert pick(w[:6])[0] == "conv2d"                               # 6 channels: not in fours
    # im2col: in place within the offset its windows allow, forward when the output is
    # the bigger one, last pair first when it is the smaller (it then ends near the input's end)
    assert pick(rng.integers(-127, 128, (4, 3, 3, 2)), a={"padding": (1, 1, 1, 1)}) == (
        "conv2d_dsp", "fast", "window")
    assert pick(rng.integers(-127, 128, (4, 3, 3, 16)), a={"stride": (2, 2)}) == (
        "conv2d_dsp", "fast", "window_reverse")


@pytest.mark.parametrize("per_channel", [False, True], ids=["layer_shift", "channel_shift"])
def test_fast_requant_equals_tflite_near_ties(per_channel):
    """SMMLA + SSAT with generation-time constants == MultiplyByQuantizedMultiplier + zp,
    clamped, on every accumulator around the rounding ties of real multipliers, with
    one shift for the layer and with one per channel (shifts up to 20 apart)."""
    from tinyds import fixedpoint
    rng = np.random.default_rng(32)
    checked = 0
    for _ in range(200):
        m = rng.integers(1 << 30, 1 << 31, 4)
        m[0] = 1 << 30
        spread = 21 if per_channel else 7                  # one layer shift: spread <= 6
        shift = -(int(rng.integers(1, 4)) + rng.integers(0, spread, 4))
        zp = int(rng.integers(-128, 100))
        act_min, act_max = zp, int(rng.integers(zp, 128))
        # accumulators whose exact quotient lands within 2 of a half-way point,
        # within what the 2^s scaling leaves of int32
        e = -shift
        real = m / 2.0 ** (31 + e)
        reach = np.minimum(300, np.floor((1 << 26) * real)).astype(np.int64)[:, None]
        steps = rng.integers(-reach, reach + 1, (4, 64)) + 0.5
        acc = np.round(steps / real[:, None])[:, :, None].astype(np.int64) + np.arange(-2, 3)
        acc = acc.reshape(4, -1).T
        q = fixedpoint.fast_requant(m, shift, zp, act_min, np.full(4, 127), acc.min(axis=0),
                                    acc.max(axis=0), per_channel)
        assert q is not None
        want = np.clip(fixedpoint.multiply_by_quantized_multiplier(acc, m, shift) + zp,
                       act_min, act_max)
        got = np.clip(fixedpoint.fast_requantize(acc << q["scale_bits"], q["mult"], q["k"],
                                                 q["exponent"]), act_min, act_max)
        np.testing.assert_array_equal(got, want)
        checked += acc.size
    assert checked > 250_000
    # no fused ReLU (act_min below the zero point): the floor rounding would differ
    assert fixedpoint.fast_requant([1 << 30], [-3], 0, -128, [127], [-1000], [1000]) is None


def test_fast_requant_constant_channels():
    """A channel whose output cannot move over its accumulator range -- a tiny
    multiplier under a large bias, as real layers have -- becomes a constant
    (m = 0) and stays out of the layer's shift E, so its neighbours keep the
    2-instruction path; every accumulator in range still gives TFLite's bytes."""
    from tinyds import fixedpoint
    m = np.array([1 << 30, 1500000000, 1 << 30, 0])
    shift = np.array([-7, -9, -28, 0])                     # channel 2: e = 28
    lo = np.array([-40000, -40000, 900_000_000, -5])
    hi = np.array([40000, 40000, 900_100_000, 5])
    q = fixedpoint.fast_requant(m, shift, -128, -128, np.full(4, 100), lo, hi)
    assert q is not None and q["exponent"] == 10            # from e = 9, not 28
    assert q["mult"].tolist() == [1 << 30, 1500000000, 0, 0]
    acc = np.linspace(lo, hi, 4001).round().astype(np.int64)
    want = np.clip(fixedpoint.multiply_by_quantized_multiplier(acc, m, shift) - 128, -128, 127)
    got = fixedpoint.fast_requantize(acc << q["scale_bits"], q["mult"], q["k"], q["exponent"])
    np.testing.assert_array_equal(got, want)
    assert len(set(want[:, 2].tolist())) == 1 and want[0, 2] > -128    # a constant, not a clamp


def test_fast_kernel_compiles_for_cortex_m4(opkit):
    opkit.arm_compiles(fast_sweep(opkit, 33, 8), target=opkit.DSP)


@qemu_cases("stm32f4")
def m4_fast_cases():
    return fast_sweep(kit, 50, 24)


@pytest.mark.slow
def test_fast_kernel_on_cortex_m4_in_qemu(opkit, qemu_sweep):
    """The inline-assembly GEMM loop, SXTB16/SMMLA/SSAT on the emulated Cortex-M4."""
    swept = qemu_sweep(m4_fast_cases)
    cases = [(g, x) for g, x, _ in swept]
    assert set(kinds(opkit, cases)) == {"fast", "fast_clamp", "fast_var", "tflite"}
    assert fast_cores(opkit, cases) == ALL_CORES
    kit.assert_sweep_matches_reference(swept)


def test_sweeps_cover_every_requantize_and_kernel_choice(opkit):
    """The bit-exact sweeps above run every requantization the generator picks
    (left shift; right shifts >= 1) and both the pointwise and the windowed kernel;
    test_c_with_shift_zero_channels runs the third (a live channel at shift 0)."""
    picks = {(p["requantize"], p["pointwise"]) for p in
             (conv2d.c_params(g, g.ops[0]) for g, _ in sweep(opkit, 2, 40))}
    assert {r for r, _ in picks} == {"tinyds_requantize", "tinyds_requantize_rs"}
    assert {pw for _, pw in picks} == {True, False}


def shift_zero_case(opkit, rng, pointwise):
    """Per-channel real multipliers in [0.55, 0.95] (shift 0), one at 0.3 (shift -1)
    and, sometimes, a dead channel (multiplier 0): tinyds_requantize_lt1."""
    (h, w_, kh, kw), attrs = opkit.random_window(rng, pointwise=pointwise)
    ic, oc = int(rng.integers(1, 6)), int(rng.integers(2, 9))
    real = rng.uniform(0.55, 0.95, oc)
    real[0] = 0.3
    if rng.random() < 0.5:
        real[-1] = 0.0
    s_in, s_out = 0.05, 0.02
    w, x = opkit.random_operands(rng, (oc, kh, kw, ic), (4, h, w_, ic), 3, small=True)
    bias = rng.integers(-20, 21, oc)
    g = opkit.graph("conv2d", (1, h, w_, ic), w, bias, attrs, s_in=s_in, zp_in=3,
                    s_w=real * s_out / s_in, s_out=s_out, zp_out=int(rng.integers(-20, 21)))
    return g, x


def test_c_with_shift_zero_channels(opkit):
    rng = np.random.default_rng(31)
    cases = [shift_zero_case(opkit, rng, pointwise=i % 2 == 0) for i in range(8)]
    assert all(conv2d.c_params(g, g.ops[0])["requantize"] == "tinyds_requantize_lt1"
               for g, _ in cases)
    opkit.assert_c_matches_reference(cases)


@qemu_cases("cortex-m0plus")
def m0plus_cases():
    rng = np.random.default_rng(6)
    cases = [random_case(kit, rng, pointwise=i % 3 < 2, small=i % 4 == 3) for i in range(12)]
    return cases + [shift_zero_case(kit, rng, pointwise=i % 2 == 0) for i in range(3)]


@pytest.mark.slow
def test_c_matches_reference_on_cortex_m0plus_in_qemu(qemu_sweep):
    """The ARMv6-M build: tinyds_dot4, the narrow requantization multiply, every
    requantization choice."""
    kit.assert_sweep_matches_reference(qemu_sweep(m0plus_cases))
