"""Integer op params derived from scales, checked against values worked out by hand from TFLite's formulas."""
import numpy as np

from tinyds.ir import Graph, Op, Tensor
from tinyds.ops.activation import activation_range
from tinyds.requant import derive_int_params


def _act(name, scale, zp, shape=(1, 4, 4, 2)):
    return Tensor(name, shape, "int8", scale=np.array([scale], np.float32), zero_point=np.array([zp]))


def test_activation_range():
    assert activation_range("none", 0.1, 5) == (-128, 127)
    assert activation_range("relu", 0.1, 5) == (5, 127)
    assert activation_range("relu", 0.1, -130) == (-128, 127)
    # relu6 at scale 6/255 reaches 127 exactly from zp -128
    assert activation_range("relu6", 6 / 255, -128) == (-128, 127)
    # 6 / 0.05 = 120 -> -20 + 120 = 100
    assert activation_range("relu6", 0.05, -20) == (-20, 100)


def _graph(op, tensors):
    return Graph("t", {t.name: t for t in tensors}, [op], [op.inputs[0]], op.outputs)


def test_conv_multipliers_per_channel():
    w = Tensor("w", (2, 1, 1, 2), "int8", data=np.ones((2, 1, 1, 2), np.int8),
               scale=np.array([0.5, 0.25], np.float32), zero_point=np.zeros(2, np.int64), axis=0)
    op = Op("conv2d", "c", ["x", "w", ""], ["y"], {"activation": "relu", "stride": (1, 1),
                                                 "dilation": (1, 1), "padding": (0, 0, 0, 0)})
    g = _graph(op, [_act("x", 0.5, 0), w, _act("y", 1.0, -10)])
    derive_int_params(g)
    # 0.5*0.5/1 = 0.25 = 2^30 * 2^(-1-31); 0.125 -> shift -2
    assert op.attrs["multiplier"].tolist() == [1 << 30, 1 << 30]
    assert op.attrs["shift"].tolist() == [-1, -2]
    assert (op.attrs["act_min"], op.attrs["act_max"]) == (-10, 127)


def test_add_params():
    op = Op("add", "a", ["x1", "x2"], ["y"], {"activation": "none"})
    g = _graph(op, [_act("x1", 0.1, 0), _act("x2", 0.05, 3), _act("y", 0.1, 1)])
    derive_int_params(g)
    assert op.attrs["left_shift"] == 20
    assert (op.attrs["input1_multiplier"], op.attrs["input1_shift"]) == (1 << 30, 0)     # 0.5
    assert (op.attrs["input2_multiplier"], op.attrs["input2_shift"]) == (1 << 30, -1)    # 0.25
    # 0.2 / (2^20 * 0.1) = 2^-19
    assert (op.attrs["output_multiplier"], op.attrs["output_shift"]) == (1 << 30, -18)


def test_softmax_params():
    op = Op("softmax", "s", ["x"], ["y"], {"beta": 1.0})
    g = _graph(op, [_act("x", 1 / 16, 0, (1, 10)), _act("y", 1 / 256, -128, (1, 10))])
    derive_int_params(g)
    # 1/16 * 2^26 = 2^22 -> (2^30, 23); radius = 31 * 2^26 / 2^23 = 248
    assert (op.attrs["input_multiplier"], op.attrs["input_left_shift"]) == (1 << 30, 23)
    assert op.attrs["diff_min"] == -248
