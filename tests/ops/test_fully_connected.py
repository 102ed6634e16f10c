"""fully_connected: integer reference vs PyTorch float, generated C vs reference bit for bit."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import opkit as kit
from oputil import qemu_cases
from tinyds.ir import Graph, Op, Tensor
from tinyds.ops import fully_connected


def random_case(opkit, rng, *, small=False, spatial=False, per_tensor=False, w_zp=0):
    """A random FC layer and a batch of 6 inputs. spatial: the input is an NHWC
    activation the layer flattens; per_tensor: one weight scale for all rows."""
    depth, oc = int(rng.integers(1, 70)), int(rng.integers(1, 14))
    x_shape = (1, 1, 1, depth) if not spatial else (1, 2, 3, depth)
    k = int(np.prod(x_shape))
    q = opkit.random_scales(rng, k, 1 if per_tensor else oc, small)
    spread = int(q.pop("spread"))
    w, x = opkit.random_operands(rng, (oc, k), (6, *x_shape[1:]), q["zp_in"], small)
    if w_zp:
        w = np.clip(w + w_zp, -128, 127)
    bias = rng.integers(-4 * spread, 4 * spread + 1, oc) if rng.random() < 0.7 else None
    attrs = dict(activation=str(rng.choice(["none", "relu", "relu6"])))
    if per_tensor:
        q["s_w"] = np.full(oc, q["s_w"][0])
    g = opkit.graph("fully_connected", x_shape, w, bias, attrs, w_zp=w_zp, **q)
    if per_tensor:      # as TFLite stores it: one scale, one multiplier/shift pair
        op = g.ops[0]
        op.attrs["multiplier"], op.attrs["shift"] = op.attrs["multiplier"][:1], op.attrs["shift"][:1]
    return g, x


def torch_float(opkit, g, x):
    """Dequantize, F.linear in float64, requantize round-to-nearest."""
    op = g.ops[0]
    s_in, zp_in = g.input.qparams
    wt = g.tensors["w"]
    s_w = wt.scale.astype(np.float64)
    xf = torch.tensor((x.reshape(len(x), -1).astype(np.float64) - zp_in) * s_in)
    wf = torch.tensor((wt.data.astype(np.float64) - wt.zero_point[:, None]) * s_w[:, None])
    bf = torch.tensor(g.tensors["b"].data * s_in * s_w) if "b" in g.tensors else None
    return opkit.quantize(F.linear(xf, wf, bf).numpy(), *g.output.qparams,
                          op.attrs["act_min"], op.attrs["act_max"])


def test_reference_matches_torch_within_one_lsb(opkit):
    rng = np.random.default_rng(21)
    exact = total = inside = left_shifts = 0
    for i in range(36):
        g, x = random_case(opkit, rng, small=i % 3 == 1, spatial=i % 4 == 2,
                           w_zp=int(rng.integers(-20, 21)) if i % 5 == 4 else 0)
        op = g.ops[0]
        got = fully_connected.reference(g, op, x).astype(np.int64)
        want = torch_float(opkit, g, x)
        assert got.shape == want.shape == (6, g.output.shape[1])
        assert np.abs(got - want).max() <= 1, f"case {i}: {op.attrs}"
        exact += int((got == want).sum())
        total += got.size
        inside += int(((got > op.attrs["act_min"]) & (got < op.attrs["act_max"])).sum())
        left_shifts += int((op.attrs["shift"] > 0).any())
    assert exact / total > 0.97
    assert inside / total > 0.35
    assert left_shifts >= 6


def test_reference_by_hand():
    """2 inputs, 2 outputs, a weight zero point, per-tensor multiplier: worked on paper."""
    x = Tensor("x", (1, 2), "int8", scale=np.array([1.0], np.float32), zero_point=np.array([-3]))
    y = Tensor("y", (1, 2), "int8", scale=np.array([1.0], np.float32), zero_point=np.array([1]))
    w = Tensor("w", (2, 2), "int8", data=np.array([[3, 4], [-5, 6]], np.int8),
               scale=np.ones(1, np.float32), zero_point=np.full(1, 2, np.int64), axis=0)
    b = Tensor("b", (2,), "int32", data=np.array([100, -7], np.int32))
    op = Op("fully_connected", "fc", ["x", "w", "b"], ["y"], dict(
        activation="relu", multiplier=np.array([3 << 29], np.int32),
        shift=np.array([-3], np.int32), act_min=1, act_max=127))     # real scale 0.09375
    g = Graph("t", {t.name: t for t in (x, y, w, b)}, [op], ["x"], ["y"])
    xs = np.array([[7, -13]], np.int8)          # x - zp = (10, -10)
    # row 0: (3-2)*10 + (4-2)*-10 + 100 = 90. Double rounding: 90 * 0.75 = 67.5 -> 68,
    # then 68 / 2^3 = 8.5 -> 9 (the exact 8.4375 would round to 8); +1 = 10
    # row 1: (-5-2)*10 + (6-2)*-10 - 7 = -117 -> -87.75 -> -88 -> -11, +1 = -10, relu -> 1
    assert fully_connected.reference(g, op, xs).tolist() == [[10, 1]]
    assert fully_connected.macs(g, op) == 4


def sweep(opkit, seed, n):
    rng = np.random.default_rng(seed)
    return [random_case(opkit, rng, small=i % 4 == 3, spatial=i % 5 == 1, per_tensor=i % 6 == 2,
                        w_zp=int(rng.integers(-20, 21)) if i % 7 == 5 else 0)
            for i in range(n)]


def test_c_matches_reference_bit_exactly(opkit):
    cases = sweep(opkit, 22, 40)
    opkit.assert_c_matches_reference(cases)


def test_c_without_folded_offset(opkit, monkeypatch):
    """The kernel variant that adds the input offset per MAC (used when the folded
    bias would leave int32) on layers that would normally fold it."""
    monkeypatch.setattr(fully_connected, "fold_bias", lambda *args: None)
    rng = np.random.default_rng(24)
    cases = [random_case(opkit, rng) for i in range(10)]
    assert not any(fully_connected.c_params(g, g.ops[0])["fold"] for g, _ in cases)
    opkit.assert_c_matches_reference(cases)


def test_c_dsp_path_matches_reference_bit_exactly(opkit):
    """The TINYDS_DSP loop (four inputs per SXTB16 + SMLAD step), which DSP cores
    compile in, run on the host through tinyds_dsp.h's C twins, on the sweep above."""
    opkit.assert_c_matches_reference(sweep(opkit, 22, 40), cflags=opkit.DSP_PATH)


def test_c_compiles_for_cortex_m4(opkit):
    opkit.arm_compiles(sweep(opkit, 23, 8))


@qemu_cases("stm32f4")
def m4_cases():
    return sweep(kit, 25, 15)


@pytest.mark.slow
def test_c_matches_reference_on_cortex_m4_in_qemu(qemu_sweep):
    """The Cortex-M4 build, where the DSP (SXTB16/SMLAD) loops are compiled in."""
    kit.assert_sweep_matches_reference(qemu_sweep(m4_cases))
