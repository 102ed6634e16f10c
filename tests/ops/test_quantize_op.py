"""quantize (int8 -> int8 QUANTIZE inside a graph, uint8 <-> int8 at a model's edges):
reference vs float, vs TFLite Micro itself, generated C vs reference, over every input
value, and a .tflite with a QUANTIZE between two layers imported and run like TFLM.
(Named _op: tests/test_quantize.py is the quantizer's.)"""
import numpy as np
import pytest

from test_avg_pool2d import tflm
from oputil import run_c
from test_leaky_relu import ALL_INT8, assert_within_one_lsb, random_qparams, unary_graph
from tinyds import reference
from tinyds.errors import TinydsError
from tinyds.requant import derive_int_params
from tinyds.export_tflite import write_tflite
from tinyds.frontends.tflite import load_tflite


def graphs(seed, n):
    rng = np.random.default_rng(seed)
    gs = [unary_graph("quantize", random_qparams(rng), random_qparams(rng)) for _ in range(n)]
    gs.append(unary_graph("quantize", (0.02, 3), (0.02, 3)))           # same params: identity
    return gs


def test_reference_within_one_lsb_of_float():
    assert_within_one_lsb(graphs(110, 30), lambda g: lambda x: x, 0.95)
    g = graphs(110, 0)[-1]
    np.testing.assert_array_equal(reference.run(g, ALL_INT8), ALL_INT8)


def test_matches_tflite_micro_c_and_round_trip(opkit, tmp_path):
    gs = graphs(111, 20)
    for i, g in enumerate(gs):
        want = reference.run(g, ALL_INT8)
        np.testing.assert_array_equal(want, tflm(g, ALL_INT8), err_msg=str(g.ops[0].attrs))
        back = load_tflite(write_tflite(g, tmp_path / f"q{i}.tflite"))
        assert [op.type for op in back.ops] == ["quantize"]
        np.testing.assert_array_equal(reference.run(back, ALL_INT8), want)
    opkit.assert_c_matches_reference([(g, ALL_INT8) for g in gs])


ALL_UINT8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)


def edge_graph(kinds, q_in, q_out):
    """One QUANTIZE between a uint8 and an int8 tensor (the graph's input or output)."""
    g = unary_graph("quantize", q_in, q_out)
    g.tensors["x"].dtype, g.tensors["y"].dtype = kinds
    return derive_int_params(g)


def edge_graphs(seed, n):
    """uint8 -> int8 and int8 -> uint8 at random scales, and the converter's own form
    (same scale, zero points 128 apart: TFLM flips the top bit) in both directions."""
    rng = np.random.default_rng(seed)
    gs = []
    for kinds in (("uint8", "int8"), ("int8", "uint8")):
        for _ in range(n):
            (s_in, zp_in), (s_out, zp_out) = random_qparams(rng), random_qparams(rng)
            zp_in += 128 * (kinds[0] == "uint8")
            zp_out += 128 * (kinds[1] == "uint8")
            gs.append(edge_graph(kinds, (s_in, zp_in), (s_out, zp_out)))
        s, zp = random_qparams(rng)
        shifted = zp + 128
        gs.append(edge_graph(kinds, (s, shifted if kinds[0] == "uint8" else zp),
                             (s, zp if kinds[0] == "uint8" else shifted)))
    return gs


def test_uint8_edges_match_tflite_micro_c_and_round_trip(tmp_path):
    gs = edge_graphs(112, 8)
    for i, g in enumerate(gs):
        x = ALL_UINT8 if g.input.dtype == "uint8" else ALL_INT8
        want = reference.run(g, x)
        assert want.dtype == np.dtype(g.output.dtype)
        np.testing.assert_array_equal(want, tflm(g, x), err_msg=str(g.ops[0].attrs))
        np.testing.assert_array_equal(run_c(g, x), want, err_msg=str(g.ops[0].attrs))
        back = load_tflite(write_tflite(g, tmp_path / f"u{i}.tflite"))
        assert (back.input.dtype, back.output.dtype) == (g.input.dtype, g.output.dtype)
        np.testing.assert_array_equal(reference.run(back, x), want)
    flips = [g for g in gs if g.ops[0].attrs["multiplier"] == 1 << 30]
    assert len(flips) == 2
    for g in flips:       # the converter's form is a flip of the top bit: 0 <-> -128, 255 <-> 127
        x = ALL_UINT8 if g.input.dtype == "uint8" else ALL_INT8
        np.testing.assert_array_equal(reference.run(g, x).view(np.uint8), x.view(np.uint8) ^ 0x80)


def test_uint8_to_uint8_is_refused(tmp_path):
    """TFLM has no uint8 -> uint8 QUANTIZE, so the importer refuses it in one line."""
    g = edge_graph(("uint8", "int8"), (0.02, 130), (0.02, 2))
    g.tensors["y"].dtype, g.tensors["y"].zero_point = "uint8", np.array([130])
    with pytest.raises(TinydsError, match="QUANTIZE uint8 -> uint8.*int8 -> int8, uint8 -> int8"):
        load_tflite(write_tflite(g, tmp_path / "uu.tflite"))
