""".tflite import and export: TFLite's padding rule, a round trip through the schema
module, the edges (QUANTIZE/DEQUANTIZE) and the errors for what we do not support.

The models here are built in the test (export_tflite of a hand-made quantized
graph), so nothing outside the repo is needed except for the MLPerf Tiny checks,
which skip when ../shared is absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flatbuffers", reason="the .tflite interop needs `pip install 'tinyds[tflite]'`")

from tinyds import reference  # noqa: E402
from tinyds.errors import TinydsError  # noqa: E402
from tinyds.export_tflite import export_tflite  # noqa: E402
from tinyds.frontends.tflite import load_tflite, schema, tflite_padding  # noqa: E402
from tinyds.ir import Graph, Op, Tensor  # noqa: E402
from tinyds.requant import derive_int_params  # noqa: E402

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"
UNIFORM_STD = 74.0   # std of int8 values uniform over [-128, 127]


def small_graph(seed: int = 0) -> Graph:
    """A quantized graph using every op the .tflite path supports.

    pad -> conv 3x3/2 with explicit (non SAME/VALID) padding -> depthwise x2
    dilated SAME relu6 -> two 1x1 branches -> add relu -> max pool -> avg pool
    SAME -> mean (requantizing) -> reshape -> fc -> softmax. Weight scales are
    set from each output scale so few values saturate.
    """
    rng = np.random.default_rng(seed)
    g = Graph("small", {}, [], ["x"], [])

    def act(name, shape, scale, zp):
        return g.add_tensor(Tensor(name, tuple(shape), "int8", scale=np.array([scale], np.float32),
                                   zero_point=np.array([zp], np.int64)))

    def weighted(op_type, name, x, w_shape, axis, out_shape, attrs, s_out, zp_out):
        """Weight scales follow from the wanted output scale: ~3 sigma of the accumulator."""
        xt = g.tensors[x]
        w = rng.integers(-127, 128, w_shape).astype(np.int8)
        depth = int(np.prod(w_shape)) // w_shape[axis]
        depth = depth if op_type != "depthwise_conv2d" else int(np.prod(w_shape[1:3]))
        s_in = float(xt.scale[0])
        s_w_mean = s_out * 127 / (3 * np.sqrt(depth) * UNIFORM_STD * UNIFORM_STD * s_in)
        s_w = (s_w_mean * rng.uniform(0.5, 1.5, w_shape[axis])).astype(np.float32)
        g.add_tensor(Tensor(name + "/w", w.shape, "int8", data=w, scale=s_w,
                            zero_point=np.zeros(len(s_w), np.int64), axis=axis))
        b_scale = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
        g.add_tensor(Tensor(name + "/b", (len(s_w),), "int32",
                            data=rng.integers(-3000, 3000, len(s_w)).astype(np.int32),
                            scale=b_scale, zero_point=np.zeros(len(s_w), np.int64), axis=0))
        act(name, out_shape, s_out, zp_out)
        g.ops.append(Op(op_type, name, [x, name + "/w", name + "/b"], [name], attrs))
        return name

    act("x", (1, 20, 18, 3), 0.02, -5)
    act("pad", (1, 21, 20, 3), 0.02, -5)
    g.ops.append(Op("pad", "pad", ["x"], ["pad"], {"padding": (1, 0, 0, 2)}))
    conv = weighted("conv2d", "conv", "pad", (8, 3, 3, 3), 0, (1, 10, 10, 8),
                    {"stride": (2, 2), "dilation": (1, 1), "padding": (0, 1, 1, 0),
                     "activation": "relu"}, 0.05, -128)
    dw = weighted("depthwise_conv2d", "dw", conv, (1, 3, 3, 16), 3, (1, 10, 10, 16),
                  {"stride": (1, 1), "dilation": (2, 2), "padding": (2, 2, 2, 2),
                   "depth_multiplier": 2, "activation": "relu6"}, 6 / 255, -128)
    a = weighted("conv2d", "pw_a", dw, (16, 1, 1, 16), 0, (1, 10, 10, 16),
                 {"stride": (1, 1), "dilation": (1, 1), "padding": (0, 0, 0, 0),
                  "activation": "none"}, 0.08, 3)
    b = weighted("conv2d", "pw_b", dw, (16, 1, 1, 16), 0, (1, 10, 10, 16),
                 {"stride": (1, 1), "dilation": (1, 1), "padding": (0, 0, 0, 0),
                  "activation": "relu"}, 0.06, -128)
    s_add = 1.5 * max(float(g.tensors[a].scale[0]), float(g.tensors[b].scale[0]))
    act("add", (1, 10, 10, 16), s_add, -128)
    g.ops.append(Op("add", "add", [a, b], ["add"], {"activation": "relu"}))
    act("maxpool", (1, 5, 5, 16), s_add, -128)
    g.ops.append(Op("max_pool2d", "maxpool", ["add"], ["maxpool"],
                    {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0, 0, 0),
                     "activation": "none"}))
    act("avgpool", (1, 5, 5, 16), s_add, -128)
    g.ops.append(Op("avg_pool2d", "avgpool", ["maxpool"], ["avgpool"],
                    {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1, 1, 1),
                     "activation": "none"}))
    act("mean", (1, 1, 1, 16), s_add * 0.6, -100)
    g.ops.append(Op("mean", "mean", ["avgpool"], ["mean"], {"axes": (1, 2), "keepdims": True}))
    act("flat", (1, 16), s_add * 0.6, -100)
    g.ops.append(Op("reshape", "flat", ["mean"], ["flat"], {"shape": (1, 16)}))
    logits = weighted("fully_connected", "fc", "flat", (10, 16), 0, (1, 10),
                      {"activation": "none"}, 0.1, 5)
    act("prob", (1, 10), 1 / 256, -128)
    g.ops.append(Op("softmax", "softmax", [logits], ["prob"], {"beta": 1.0}))
    g.outputs = ["prob"]
    return derive_int_params(g)


def _load_bytes(buf: bytes, tmp_path, name="m.tflite") -> Graph:
    p = tmp_path / name
    p.write_bytes(buf)
    return load_tflite(p)


def _model_t(buf: bytes):
    S = schema()
    return S, S.ModelT.InitFromObj(S.Model.GetRootAsModel(buf, 0))


def _pack(m) -> bytes:
    import flatbuffers
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.mark.parametrize("padding,size,k,s,d,pads,out", [
    (0, 25, 3, 2, 1, (1, 1), 13),    # SAME, even total: split evenly
    (0, 10, 3, 2, 1, (0, 1), 5),     # SAME, odd total: the extra pixel goes bottom/right
    (0, 10, 1, 2, 1, (0, 0), 5),     # SAME needing no padding never pads negatively
    (0, 7, 3, 1, 2, (2, 2), 7),      # SAME with dilation: effective kernel 5
    (0, 49, 10, 2, 1, (4, 5), 25),   # kws first layer
    (1, 10, 3, 2, 1, (0, 0), 4),     # VALID drops the tail
    (1, 25, 25, 25, 1, (0, 0), 1),
])
def test_tflite_padding_rule(padding, size, k, s, d, pads, out):
    (top, left, bottom, right), (oh, ow) = tflite_padding(padding, (size, 5), (k, 1), (s, 1),
                                                          (d, 1))
    assert (top, bottom, oh) == (pads[0], pads[1], out)
    assert (left, right, ow) == (0, 0, 5)


def test_export_import_round_trip_keeps_everything(tmp_path):
    g = small_graph()
    g2 = _load_bytes(export_tflite(g), tmp_path)
    # the conv's explicit padding is not SAME/VALID: export writes PAD + VALID conv
    assert [op.type for op in g2.ops] == ["pad", "pad", *[op.type for op in g.ops[1:]]]
    for name, t in g.tensors.items():
        t2 = g2.tensors[name]
        assert (t2.shape, t2.dtype) == (t.shape, t.dtype), name
        assert t2.scale.dtype == np.float32 and np.array_equal(t2.scale, t.scale), name
        assert np.array_equal(t2.zero_point, t.zero_point), name
        if t.is_const:
            assert np.array_equal(t2.data, t.data), name
    by_out = {op.outputs[0]: op for op in g2.ops}
    for op in g.ops:
        op2 = by_out[op.outputs[0]]
        for k, v in op.attrs.items():
            if k == "padding" and op.type == "conv2d" and op.name == "conv":
                assert op2.attrs[k] == (0, 0, 0, 0)
                continue
            assert np.array_equal(np.asarray(op2.attrs[k]), np.asarray(v)), (op.name, k)
    x = np.random.default_rng(1).integers(-128, 128, (50, *g.input.shape[1:]), dtype=np.int8)
    ours, back = reference.run_all(g, x), reference.run_all(g2, x)
    for name in g.tensors:
        if name in ours:
            np.testing.assert_array_equal(back[name], ours[name], err_msg=name)


def test_float_edges_are_dropped(tmp_path):
    """float input -> QUANTIZE ... DEQUANTIZE -> float output imports as the int8 core."""
    S, m = _model_t(export_tflite(small_graph()))
    sg = m.subgraphs[0]
    codes = {}
    for name in ("QUANTIZE", "DEQUANTIZE"):
        oc = S.OperatorCodeT()
        oc.builtinCode = oc.deprecatedBuiltinCode = getattr(S.BuiltinOperator, name)
        oc.version = 1
        codes[name] = len(m.operatorCodes)
        m.operatorCodes.append(oc)
    edges = []
    for old, suffix in ((sg.inputs[0], "float_in"), (sg.outputs[0], "float_out")):
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = suffix, sg.tensors[old].shape, 0, 0
        sg.tensors.append(t)
        edges.append(len(sg.tensors) - 1)
    q, dq = S.OperatorT(), S.OperatorT()
    q.opcodeIndex, q.inputs, q.outputs = codes["QUANTIZE"], [edges[0]], [sg.inputs[0]]
    dq.opcodeIndex, dq.inputs, dq.outputs = codes["DEQUANTIZE"], [sg.outputs[0]], [edges[1]]
    sg.operators = [q, *sg.operators, dq]
    sg.inputs, sg.outputs = [edges[0]], [edges[1]]
    g = _load_bytes(_pack(m), tmp_path)
    assert g.inputs == ["x"] and g.outputs == ["prob"]
    assert g.input.dtype == "int8" and "float_in" not in g.tensors


def test_unsupported_op_is_named(tmp_path):
    S, m = _model_t(export_tflite(small_graph()))
    softmax = next(oc for oc in m.operatorCodes
                   if oc.builtinCode == S.BuiltinOperator.SOFTMAX)
    softmax.builtinCode = softmax.deprecatedBuiltinCode = S.BuiltinOperator.TANH
    with pytest.raises(TinydsError, match=r"tanh_\d+: operator TANH is not supported"):
        _load_bytes(_pack(m), tmp_path)


def test_unsupported_fused_activation_is_named(tmp_path):
    S, m = _model_t(export_tflite(small_graph()))
    conv = next(op for op in m.subgraphs[0].operators
                if op.builtinOptionsType == S.BuiltinOptions.Conv2DOptions)
    conv.builtinOptions.fusedActivationFunction = S.ActivationFunctionType.TANH
    with pytest.raises(TinydsError, match="fused activation 4 is not supported"):
        _load_bytes(_pack(m), tmp_path)


def test_float_tensor_is_rejected(tmp_path):
    S, m = _model_t(export_tflite(small_graph()))
    sg = m.subgraphs[0]
    sg.tensors[sg.outputs[0]].type = S.TensorType.FLOAT32
    with pytest.raises(TinydsError, match="not quantized"):
        _load_bytes(_pack(m), tmp_path)


def test_not_a_flatbuffer(tmp_path):
    with pytest.raises(TinydsError, match="not a readable .tflite"):
        _load_bytes(b"\x00" * 64, tmp_path)


def test_mlperf_tiny_models_import():
    kws, vww = MODELS / "kws_ref_model.tflite", MODELS / "vww_96_int8.tflite"
    if not (kws.exists() and vww.exists()):
        pytest.skip(f"{MODELS} is missing: the MLPerf Tiny models live in ../shared")
    g = load_tflite(kws)
    assert [op.type for op in g.ops] == (["conv2d"] + ["depthwise_conv2d", "conv2d"] * 4
                                         + ["avg_pool2d", "reshape", "fully_connected", "softmax"])
    first = g.ops[0]
    assert first.attrs["padding"] == (4, 1, 5, 1) and first.attrs["stride"] == (2, 2)
    assert first.attrs["act_min"] == -128 and g.input.qparams[1] == 83
    assert g.ops[-2].attrs["multiplier"].shape == (1,)       # per-tensor FC weights
    g = load_tflite(vww)
    assert g.input.shape == (1, 96, 96, 3) and len(g.ops) == 31
    assert g.ops[0].attrs["padding"] == (0, 0, 1, 1)          # SAME, stride 2, even input


def _tensor(S, m, name: str):
    return next(t for t in m.subgraphs[0].tensors if t.name.decode() == name)


def _first_op(S, m, options: str):
    return next(op for op in m.subgraphs[0].operators
                if op.builtinOptionsType == getattr(S.BuiltinOptions, options))


def _swap_first_ops(S, m):
    ops = m.subgraphs[0].operators
    ops[0], ops[1] = ops[1], ops[0]


def _drop_options(S, m):
    op = _first_op(S, m, "Conv2DOptions")
    op.builtinOptions, op.builtinOptionsType = None, 0


def _set(getter, **values):
    return lambda S, m: [setattr(getter(S, m), k, v) for k, v in values.items()]


# (case, edit of the ModelT, words the one-line error must contain)
CORRUPT = [
    ("negative dim", _set(lambda S, m: _tensor(S, m, "dw"), shape=[1, -10, 10, 16]), ["'dw'", "shape"]),
    ("zero input dim", _set(lambda S, m: _tensor(S, m, "x"), shape=[1, 0, 18, 3]), ["'x'", "below 1"]),
    ("huge dims", _set(lambda S, m: _tensor(S, m, "x"), shape=[1, 100000, 100000, 3]),
     ["'x'", "elements"]),
    ("stride 0", _set(lambda S, m: _first_op(S, m, "Conv2DOptions").builtinOptions, strideH=0),
     ["conv_2d_", "stride"]),
    ("pool filter 0", _set(lambda S, m: _first_op(S, m, "Pool2DOptions").builtinOptions,
                           filterWidth=0), ["pool_2d_", "filter"]),
    ("bad padding enum", _set(lambda S, m: _first_op(S, m, "Conv2DOptions").builtinOptions,
                              padding=7), ["conv_2d_", "padding 7"]),
    ("buffer index", _set(lambda S, m: _tensor(S, m, "conv/w"), buffer=9999), ["'conv/w'", "9999"]),
    ("missing options", _drop_options, ["conv_2d_", "Conv2DOptions"]),
    ("non-UTF-8 name", _set(lambda S, m: _tensor(S, m, "dw"), name=b"dw\xff\xfe"), ["UTF-8"]),
    ("NaN scale", lambda S, m: _tensor(S, m, "x").quantization.__setattr__("scale", [float("nan")]),
     ["'x'", "nan"]),
    ("zero scale", lambda S, m: _tensor(S, m, "dw").quantization.__setattr__("scale", [0.0]),
     ["'dw'", "scale 0.0"]),
    ("negative weight scale", lambda S, m: _tensor(S, m, "fc/w").quantization.__setattr__(
        "scale", [0.01, 0.01, -0.01] + [0.01] * 7), ["'fc/w'", "-0.01"]),
    ("zero point 1000", lambda S, m: _tensor(S, m, "add").quantization.__setattr__(
        "zeroPoint", [1000]), ["'add'", "1000"]),
    ("bias zero point", lambda S, m: _tensor(S, m, "fc/b").quantization.__setattr__(
        "zeroPoint", [5] + [0] * 9), ["'fc/b'", "zero point 5"]),
    ("operators out of order", _swap_first_ops, ["before any operator computes it"]),
    ("padding vs output shape", _set(lambda S, m: _first_op(
        S, m, "DepthwiseConv2DOptions").builtinOptions, padding=1), ["depthwise_conv_2d_", "(1, 6, 6, 16)"]),
    ("pool output shape", _set(lambda S, m: _tensor(S, m, "maxpool"), shape=[1, 4, 5, 16]),
     ["max_pool_2d_", "(1, 4, 5, 16)"]),
    ("bias length", _set(lambda S, m: _tensor(S, m, "dw/b"), shape=[15]), ["'dw/b'", "buffer"]),
    ("add output shape", _set(lambda S, m: _tensor(S, m, "add"), shape=[1, 10, 10, 15]),
     ["add_", "(1, 10, 10, 16)"]),
    ("pad output shape", _set(lambda S, m: _tensor(S, m, "pad"), shape=[1, 21, 21, 3]),
     ["pad_", "(1, 21, 20, 3)"]),
    ("reshape size", _set(lambda S, m: _tensor(S, m, "flat"), shape=[1, 15]),
     ["reshape_", "different number"]),
    ("softmax output shape", _set(lambda S, m: _tensor(S, m, "prob"), shape=[1, 9]),
     ["softmax_", "(1, 10)"]),
    ("op index", _set(lambda S, m: m.subgraphs[0].operators[2], inputs=[1, 500, 2]), ["500"]),
    ("opcode index", _set(lambda S, m: m.subgraphs[0].operators[2], opcodeIndex=77), ["77"]),
]


def _corrupt(case: str) -> tuple[bytes, list[str]]:
    """The small graph's .tflite damaged as `case` says, and the words its error must name."""
    good = export_tflite(small_graph())
    if case == "truncated":
        return good[: len(good) // 2], ["truncated"]
    if case == "huge root offset":
        return b"\xf0\xff\xff\x7f" + good[4:], ["truncated"]
    edit, words = next((e, w) for c, e, w in CORRUPT if c == case)
    S, m = _model_t(good)
    edit(S, m)
    return _pack(m), words


@pytest.mark.parametrize("case", [c[0] for c in CORRUPT] + ["truncated", "huge root offset"])
def test_corrupt_tflite_is_one_line_exit_2(case, tmp_path, capsys):
    from test_cli import assert_one_line_error, run
    blob, words = _corrupt(case)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(blob)
    rc, _, err = run(capsys, "generate", bad, "-o", tmp_path / "out")
    assert_one_line_error(rc, err, "bad.tflite", *words)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tflite"]


def test_bit_flips_load_or_fail_cleanly(tmp_path):
    """Every single-bit flip outside the weights gives a Graph or a TinydsError, never another
    exception; flips inside weight or bias bytes are legitimate models."""
    good = export_tflite(small_graph())
    rng = np.random.default_rng(7)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(300):
        blob = bytearray(good)
        i = int(rng.integers(8, len(blob)))
        blob[i] ^= 1 << int(rng.integers(8))
        try:
            _load_bytes(bytes(blob), tmp_path)
            outcomes["ok"] += 1
        except TinydsError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100, outcomes
