"""logistic (sigmoid): reference vs PyTorch, vs TFLite Micro itself, and generated C vs
reference, over every int8 input value (the saturated tails beyond the input radius too)."""
import numpy as np
import torch

from test_leaky_relu import ALL_INT8, assert_within_one_lsb, random_qparams, unary_graph
from tinyds.ops.logistic import OUTPUT_PARAMS


def graphs(seed, n):
    rng = np.random.default_rng(seed)
    gs = [unary_graph("logistic", random_qparams(rng), OUTPUT_PARAMS) for _ in range(n)]
    radii = [g.ops[0].attrs["input_range_radius"] for g in gs]
    assert min(radii) < 128 < max(radii)      # some inputs saturate, in some graphs none do
    return gs


def test_reference_within_one_lsb_of_pytorch():
    assert_within_one_lsb(graphs(50, 30), lambda g: torch.sigmoid, 0.95)


def test_tflite_micro_and_generated_c_match_the_reference(opkit):
    opkit.check_op([(g, ALL_INT8) for g in graphs(51, 20) + graphs(52, 20)], tflm=True)
