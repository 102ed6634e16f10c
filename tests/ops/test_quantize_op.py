"""quantize (int8 -> int8 QUANTIZE inside a graph): reference vs float, vs TFLite Micro
itself, generated C vs reference, over every int8 input value, and a .tflite with a
QUANTIZE between two layers imported and run like TFLM. (Named _op: tests/test_quantize.py
is the quantizer's.)"""
import numpy as np

from test_avg_pool2d import tflm
from test_leaky_relu import ALL_INT8, assert_within_one_lsb, random_qparams, unary_graph
from tinyds import reference
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
