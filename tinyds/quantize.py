"""Float IR -> quantized IR (TFLite int8 scheme, or its 16x8 scheme) and the float-vs-int8 report.

Activations: per-tensor asymmetric int8 from ranges observed over a calibration
batch run through the float interpreter (min/max, or percentile/MSE clipping).
Weights: per-channel symmetric int8. Bias: int32 at scale s_in * s_w[c]. The
formulas mirror TFLite's post-training quantizer (tensorflow/lite/tools/optimize)
in float32 where it uses float32: test_quantize checks our weights and biases
against the converter's bytes in the MLPerf Tiny models. Two deliberate extras:
bias correction (the mean output shift from weight rounding goes back into the
float bias before it is quantized) and a global average pool becoming MEAN with
its own output scale, both for float-vs-int8 agreement.

activations="int16" is TFLite's 16x8 scheme: activations symmetric int16 (zero point 0,
scale max|range| / 32767), weights int8 as above, biases int64 (nothing to fit into
int32). It covers the ops a DS-CNN needs (OpSpec.int16); a global average pool stays an
average pool there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import float_ref, ops, progress, reference, requant
from .errors import TinydsError
from .ir import Graph, Op, Tensor

METHODS = ("minmax", "percentile", "mse")
ACTIVATIONS = ("int8", "int16")
INT64_LIMIT = float(1 << 62)    # int64 biases beyond this are refused by requant anyway
PERCENTILE = 99.99
HIST_BINS = 8192
INT32_MAX = (1 << 31) - 1
# A tensor that never left 0 during calibration still needs a usable scale;
# [0, 1] keeps downstream multipliers ordinary if real data is not all zero.
DEGENERATE_RANGE = 1.0
# Weight scale for an all-zero channel (TFLite would write 0, which makes the
# effective multiplier undefined); bias fitting below may enlarge it.
ZERO_CHANNEL_SCALE = np.float32(1e-8)
SYNTHETIC_SAMPLES = 128
REPORT_SAMPLES = 1000           # the report's float-vs-int8 run: enough for 0.1% steps, bounded time
CHUNK_BYTES = 256 << 20


def round_half_away(x) -> np.ndarray:
    """std::round / TfLiteRound (numpy's round is half-to-even)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def activation_params(lo: float, hi: float) -> tuple[np.float32, int]:
    """TFLite GetAsymmetricQuantizationParams for int8, in float32 like the converter."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    if hi - lo <= 0:
        hi = np.float32(lo + DEGENERATE_RANGE)
    scale = np.float32((hi - lo) / np.float32(255.0))
    zp_from_min = np.float32(-128.0) - lo / scale
    if zp_from_min < -128:
        return scale, -128
    if zp_from_min > 127:
        return scale, 127
    return scale, int(round_half_away(zp_from_min))


def activation_params_int16(lo: float, hi: float) -> tuple[np.float32, int]:
    """TFLite GetSymmetricQuantizationParams for int16 activations: max(|lo|, |hi|) / 32767
    in float32, zero point 0."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    half = max(abs(lo), abs(hi))
    if half <= 0:
        half = np.float32(DEGENERATE_RANGE)
    return np.float32(half / np.float32(32767.0)), 0


# ---------------------------------------------------------------- observers

@dataclass
class Observer:
    """One activation tensor: exact min/max and batch mean, then (if needed) a histogram."""
    lo: float = math.inf
    hi: float = -math.inf
    total: np.ndarray | float = 0.0
    count: int = 0
    hist: np.ndarray | None = None

    def see_range(self, x: np.ndarray) -> None:
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self.total = self.total + x.sum(axis=0)
        self.count += len(x)

    @property
    def mean(self) -> np.ndarray:
        """E[x] over the calibration batch, shape (1, *tensor shape[1:])."""
        return (self.total / self.count)[None]

    def see_hist(self, x: np.ndarray) -> None:
        if self.hi <= self.lo:
            return
        counts = np.histogram(x, HIST_BINS, (self.lo, self.hi))[0]
        self.hist = counts if self.hist is None else self.hist + counts

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, HIST_BINS + 1)


def _minmax(obs: Observer) -> tuple[float, float]:
    return obs.lo, obs.hi


def _percentile(obs: Observer, p: float = PERCENTILE) -> tuple[float, float]:
    """Clip each tail at p%: drops rare outliers that would waste int8 steps."""
    if obs.hist is None:
        return obs.lo, obs.hi
    cdf = np.cumsum(obs.hist) / obs.hist.sum()
    edges = obs.edges()
    lo = edges[np.searchsorted(cdf, (100.0 - p) / 100.0, side="left")]
    hi = edges[np.searchsorted(cdf, p / 100.0, side="left") + 1]
    return float(lo), float(hi)


def _mse(obs: Observer, levels: int = 255) -> tuple[float, float]:
    """The clip range [lo, hi] that minimises the expected squared quantization error.

    Per histogram bin: uniform rounding noise s^2/12 inside the range, the squared
    distance to the clip bound outside it. Each end is shrunk in turn (coordinate
    descent), so an outlier on one side does not cost the other side its range.
    levels: the quantization steps across the range (255 for int8, 65535 for int16).
    """
    if obs.hist is None:
        return obs.lo, obs.hi
    edges = obs.edges()
    centers = (edges[:-1] + edges[1:]) / 2
    alphas = np.linspace(1.0, 0.02, 99)[:, None]

    def error(lo, hi):                 # lo, hi: (K, 1) candidate ranges -> (K,) errors
        s = (hi - lo) / levels
        clipped = np.clip(centers, lo, hi)
        return np.where(clipped == centers, s * s / 12.0, (centers - clipped) ** 2) @ obs.hist

    lo_max, hi_max = min(obs.lo, 0.0), max(obs.hi, 0.0)
    lo, hi = lo_max, hi_max
    for _ in range(3):
        if hi_max > 0:
            hi = hi_max * float(alphas[np.argmin(error(np.full_like(alphas, lo), hi_max * alphas)), 0])
        if lo_max < 0:
            lo = lo_max * float(alphas[np.argmin(error(lo_max * alphas, np.full_like(alphas, hi))), 0])
    return lo, hi


RANGE_FNS = {"minmax": _minmax, "percentile": _percentile, "mse": _mse}


# ---------------------------------------------------------------- weights, bias

def quantize_weights(w: np.ndarray, axis: int, bias: np.ndarray | None, s_in: np.float32):
    """Per-channel symmetric int8 in [-127, 127] (TFLite SymmetricPerChannelQuantization).

    Channels whose bias would not fit int32 at s_in*s_w get a larger weight scale,
    as TFLite's AdjustWeightsForBiasScale does.
    """
    w = w.astype(np.float32)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    half = np.abs(moved).max(axis=1).astype(np.float32)
    # a channel whose scale would be subnormal (1/scale overflows float32) is all zeros in int8
    normal = half / np.float32(127.0) >= np.finfo(np.float32).tiny
    scale = np.where(normal, half / np.float32(127.0), ZERO_CHANNEL_SCALE).astype(np.float32)
    if bias is not None:
        b = np.abs(bias.astype(np.float64))
        too_big = b >= 0.5 * float(s_in) * scale.astype(np.float64) * INT32_MAX
        scale = np.where(too_big, (2.0 * b / INT32_MAX / float(s_in)), scale).astype(np.float32)
    inv = (np.float32(1.0) / scale).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = round_half_away((w * inv.reshape(shape)).astype(np.float32))
    return np.clip(q, -127, 127).astype(np.int8), scale


def quantize_constant(t: Tensor) -> Tensor:
    """A constant operand of add/sub/mul: per-tensor asymmetric int8 over its own [min, max]
    (with 0), as the converter quantizes constant tensors; a scalar lands exactly on 127 or -128."""
    data = t.data.astype(np.float32)
    scale, zp = activation_params(float(data.min()), float(data.max()))
    q = np.clip(round_half_away(data / scale) + zp, -128, 127).astype(np.int8)
    return Tensor(t.name, t.shape, "int8", data=q, scale=np.array([scale], np.float32),
                  zero_point=np.array([zp], np.int64))


def quantize_bias(b: np.ndarray, s_in: np.float32, s_w: np.ndarray, dtype: str = "int32"):
    """TFLite SymmetricPerChannelBiasQuantize: float32 scale product, float32 inverse, saturate
    (int32, or int64 for the 16x8 scheme)."""
    scale = (np.float32(s_in) * s_w.astype(np.float32)).astype(np.float32)
    inv = (1.0 / scale.astype(np.float64)).astype(np.float32)
    q = round_half_away((b.astype(np.float32) * inv).astype(np.float32))
    limit = INT32_MAX if dtype == "int32" else INT64_LIMIT
    return np.clip(q, -limit, limit).astype(dtype), scale


# ---------------------------------------------------------------- validation

def _check_graph(g: Graph) -> None:
    for op in g.ops:
        if ops.get(op.type).reference is None:
            raise TinydsError(f"{op.name}: {op.type} was not folded or fused before quantization; "
                              "run tinyds.passes.optimize on the float graph first")
        for name in op.inputs:
            t = g.tensor(name)
            if t is not None and t.is_const and not np.all(np.isfinite(t.data)):
                raise TinydsError(f"{op.name}: tensor {name} contains NaN or Inf; "
                                  "fix or retrain the model")


def _shown_shape(shape, layout: str) -> tuple:
    """An NHWC shape as the user wrote it (the caller converted NCHW calib to NHWC)."""
    if layout == "NCHW" and len(shape) == 4:
        n, h, w, c = shape
        return (n, c, h, w)
    if layout == "NCL" and len(shape) == 4:
        n, _, w, c = shape
        return (n, c, w)
    return tuple(shape)


def _check_calib(g: Graph, x):
    """A float32 batch per input (a list for several inputs), or one line naming the fix."""
    if len(g.inputs) > 1:
        if not isinstance(x, (list, tuple)) or len(x) != len(g.inputs):
            raise TinydsError(f"calibration data: the model has {len(g.inputs)} inputs; pass "
                              "one batch per input (an .npz keyed input0, input1, ...)")
        return [_check_one(g, n, b, f"calibration input {n!r}") for n, b in zip(g.inputs, x)]
    return _check_one(g, g.inputs[0], x, "calibration data")


def _check_one(g: Graph, name: str, x, what: str) -> np.ndarray:
    want = tuple(g.tensors[name].shape[1:])
    layout = g.source_layout if len(want) == 3 else "NHWC"
    expected = "(N, " + ", ".join(map(str, _shown_shape((0, *want), layout)[1:])) + ")"
    x = np.asarray(x)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want or x.shape[0] < 1:
        raise TinydsError(f"{what} has shape {_shown_shape(x.shape, layout)}, "
                          f"expected {expected} ({layout}); pass a float32 batch of model inputs")
    if not np.issubdtype(x.dtype, np.floating):
        raise TinydsError(f"{what} has dtype {x.dtype}, expected float32; "
                          "pass the float inputs the model was trained on")
    if not np.all(np.isfinite(x)):
        raise TinydsError(f"{what} contains NaN or Inf; remove those samples")
    return x.astype(np.float32)


# ---------------------------------------------------------------- running in chunks

def _chunk_size(g: Graph) -> int:
    per_sample = sum(t.size for t in g.tensors.values() if not t.is_const) * 8
    return max(1, CHUNK_BYTES // max(per_sample, 1))


def _take(x, sl: slice):
    """Samples sl of a batch, or of each input's batch."""
    return [b[sl] for b in x] if isinstance(x, (list, tuple)) else x[sl]


def _samples(x) -> int:
    return len(x[0]) if isinstance(x, (list, tuple)) else len(x)


def _chunks(g: Graph, x):
    """Batch slices small enough that float_ref's every-tensor output stays in memory."""
    step = _chunk_size(g)
    for i in range(0, _samples(x), step):
        yield _take(x, slice(i, i + step))


def _n_chunks(g: Graph, x) -> int:
    return -(-_samples(x) // _chunk_size(g))


def _activations(g: Graph) -> list[str]:
    return list(g.inputs) + [op.outputs[0] for op in g.ops]


def _observe(g: Graph, x: np.ndarray, method: str) -> dict[str, Observer]:
    obs = {name: Observer() for name in _activations(g)}
    for chunk in progress.bar(_chunks(g, x), "calibrating (float ranges)", _n_chunks(g, x)):
        values = float_ref.run(g, chunk)
        for name, o in obs.items():
            if not np.all(np.isfinite(values[name])):
                op = g.producer(name)
                raise TinydsError(f"{op.name if op else name}: float output is NaN or Inf on the "
                                  "calibration data; check the weights and the input scaling")
            o.see_range(values[name])
    if method != "minmax":
        for chunk in progress.bar(_chunks(g, x), f"calibrating ({method} histograms)",
                                  _n_chunks(g, x)):
            values = float_ref.run(g, chunk)
            for name, o in obs.items():
                o.see_hist(values[name])
    return obs


# ---------------------------------------------------------------- the graph

def _act_tensor(t: Tensor, scale, zp: int, dtype: str = "int8") -> Tensor:
    return Tensor(t.name, t.shape, dtype, scale=np.array([scale], np.float32),
                  zero_point=np.array([zp], np.int64))


def _build(g: Graph, ranges: dict[str, tuple[float, float]],
           means: dict[str, np.ndarray] | None, dtype: str = "int8") -> Graph:
    ranges = _tie_ranges(g, ranges)
    fit = activation_params_int16 if dtype == "int16" else activation_params
    tensors = {n: _act_tensor(g.tensors[n], *fit(*ranges[n]), dtype) for n in g.inputs}
    qg = Graph(g.name, tensors, [], list(g.inputs), list(g.outputs), g.source_layout)
    for op in g.ops:
        y = g.tensors[op.outputs[0]]
        spec = ops.get(op.type)
        if spec.const_operands:
            for name in op.inputs:
                if g.tensors[name].is_const:
                    tensors[name] = quantize_constant(g.tensors[name])
        first_in = tensors[op.inputs[0]]
        replaced = spec.quantized_as(g, op) if spec.quantized_as else None
        if replaced is not None and not (dtype == "int8" or ops.get(replaced.type).int16):
            replaced = None
        if spec.same_quant and replaced is None:
            params = first_in.qparams
        elif spec.fixed_output:
            params = spec.fixed_output[dtype]
        else:
            params = fit(*ranges[y.name])
        tensors[y.name] = _act_tensor(y, *params, dtype)
        inputs = list(op.inputs)
        if spec.weight_axis is not None:
            mean = None if means is None else means[op.inputs[0]]
            inputs = inputs[:2] + [_quantize_weighted(g, op, tensors, first_in.scale[0], mean,
                                                      "int64" if dtype == "int16" else "int32")]
        elif not spec.const_operands:
            for name in op.inputs[1:]:
                if name and g.tensors[name].is_const:
                    raise TinydsError(f"{op.name}: constant input {name} to {op.type} is not "
                                      "supported; only conv/depthwise/linear/add/sub/mul/prelu carry constants")
        if spec.tied_quant:
            _check_tied(qg, Op(op.type, op.name, inputs, list(op.outputs)))
        if replaced is not None:
            qg.ops.append(replaced)
        else:
            qg.ops.append(Op(op.type, op.name, inputs, list(op.outputs), dict(op.attrs)))
    return requant.derive_int_params(qg)


def _tie_ranges(g: Graph, ranges: dict) -> dict:
    """An op with tied_quant (a concatenation) copies bytes, so its inputs need the output's
    scale and zero point: every tensor joined to one (directly, or through an op that shares
    its input's params) gets the union of the group's calibration ranges."""
    parent = {}

    def find(t):
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    def union(a, b):
        parent[find(a)] = find(b)

    tied = set()
    for op in g.ops:
        spec = ops.get(op.type)
        if spec.tied_quant:
            tied.update(op.inputs + op.outputs)
            for name in op.inputs:
                union(name, op.outputs[0])
        elif spec.same_quant and not (spec.quantized_as and spec.quantized_as(g, op)):
            union(op.inputs[0], op.outputs[0])
    groups: dict[str, list[str]] = {}
    for name in ranges:
        groups.setdefault(find(name), []).append(name)
    ranges = dict(ranges)
    for members in groups.values():
        if tied.intersection(members):
            lo = min(ranges[n][0] for n in members)
            hi = max(ranges[n][1] for n in members)
            for n in members:
                ranges[n] = (lo, hi)
    return ranges


def _check_tied(qg: Graph, op: Op) -> None:
    want = qg.tensors[op.outputs[0]].qparams
    for name in op.inputs:
        if qg.tensors[name].qparams != want:
            raise TinydsError(f"{op.name}: {op.type} input {name} has fixed quantization "
                              f"{qg.tensors[name].qparams} (softmax/sigmoid output) but the "
                              f"output needs {want}; concatenate before the softmax/sigmoid")


def _quantize_weighted(g: Graph, op: Op, tensors: dict, s_in: np.float32, mean_x,
                       bias_dtype: str = "int32") -> str:
    """Weights and bias of one conv/depthwise/FC op, the bias corrected when mean_x is
    given (which adds a bias tensor to a bias-free op); returns the bias tensor's name.
    An int64 bias (16x8) needs no weight scale enlarged to fit it."""
    w = g.tensors[op.inputs[1]]
    b = g.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    axis = ops.get(op.type).weight_axis
    fit_bias = None if b is None or bias_dtype == "int64" else b.data
    qw, s_w = quantize_weights(w.data, axis, fit_bias, s_in)
    tensors[w.name] = Tensor(w.name, w.shape, "int8", data=qw, scale=s_w,
                             zero_point=np.zeros(len(s_w), np.int64), axis=axis)
    bias = np.zeros(len(s_w)) if b is None else b.data.astype(np.float64)
    if mean_x is not None:
        shape = [1] * w.data.ndim
        shape[axis] = -1
        bias = bias - _mean_output_shift(g, op, qw * s_w.reshape(shape) - w.data, mean_x)
    if b is not None or mean_x is not None:
        name = b.name if b is not None else f"{op.name}_bias"
        qb, s_b = quantize_bias(bias, s_in, s_w, bias_dtype)
        tensors[name] = Tensor(name, (len(s_w),), bias_dtype, data=qb, scale=s_b,
                               zero_point=np.zeros(len(s_b), np.int64), axis=0)
        return name
    return ""


def _mean_output_shift(g: Graph, op: Op, dw: np.ndarray, mean_x: np.ndarray) -> np.ndarray:
    """Per-channel mean of what the weight rounding error dw adds to the output.

    The op is linear before its activation, so E[op(x; dw)] = op(E[x]; dw): one
    float run on the calibration mean gives it (Nagel et al. 2019, bias correction).
    """
    w_name = op.inputs[1]
    probe = Op(op.type, op.name, [op.inputs[0], w_name, ""], list(op.outputs),
               {**op.attrs, "activation": "none"})
    errors = Graph("probe", {w_name: Tensor(w_name, dw.shape, data=dw)}, [probe], [], [])
    y = ops.get(op.type).float_reference(errors, probe, mean_x)
    return y.reshape(-1, y.shape[-1]).mean(axis=0)


# ---------------------------------------------------------------- float vs int8

def quantize_input(qg: Graph, x, index: int = 0):
    """Float NHWC batch -> input `index`'s type (int8, or uint8) with its params (TFLite
    QUANTIZE: round(x/s) + zp, the quotient in float32, halves away from zero, saturated).
    NaN, undefined in TFLite, becomes the zero point (real 0), as NAME_quantize_input does.
    A list of batches (one per input) gives a list."""
    if isinstance(x, (list, tuple)):
        return [quantize_input(qg, b, i) for i, b in enumerate(x)]
    t = qg.tensors[qg.inputs[index]]
    s, zp = t.qparams
    with np.errstate(invalid="ignore", over="ignore"):
        v = np.asarray(x, np.float32) / np.float32(s)
    q = np.clip(round_half_away(np.where(np.isnan(v), 0, v)) + zp, *t.qrange)
    return q.astype(t.dtype)


def dequantize_output(qg: Graph, q: np.ndarray, index: int = 0) -> np.ndarray:
    """int8 (or uint8) output `index` -> float32 s * (q - zp), one float32 rounding as
    NAME_dequantize_output."""
    s, zp = qg.tensors[qg.outputs[index]].qparams
    return np.float32(s) * (np.asarray(q, np.int32) - zp).astype(np.float32)


def dequantize(t: Tensor, q: np.ndarray) -> np.ndarray:
    s, zp = t.qparams
    return (q.astype(np.float64) - zp) * s


def snr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class Comparison:
    """Float graph vs quantized graph on one batch."""
    agreement: float                      # top-1 agreement, percent
    snr_db: float                         # output SNR
    tensor_snr_db: dict[str, float]       # every activation tensor
    samples: int


def compare(g: Graph, qg: Graph, x) -> Comparison:
    """Run x (float NHWC; a list for several inputs) through both graphs; agreement of argmax
    over the first output, SNR over every output."""
    names = _activations(g)
    sig = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    agree = 0
    x = [np.asarray(b, np.float32) for b in x] if isinstance(x, (list, tuple)) else \
        np.asarray(x, np.float32)
    for chunk in progress.bar(_chunks(g, x), "float vs int8", _n_chunks(g, x)):
        f = float_ref.run(g, chunk)
        q = reference.run_all(qg, quantize_input(qg, chunk))
        for name in names:
            dq = dequantize(qg.tensors[name], q[name])
            sig[name] += float(np.sum(f[name] ** 2))
            noise[name] += float(np.sum((f[name] - dq) ** 2))
        out = g.outputs[0]
        fo = f[out].reshape(_samples(chunk), -1)
        qo = q[out].reshape(_samples(chunk), -1)
        agree += int(np.sum(fo.argmax(axis=1) == qo.argmax(axis=1)))
    outs = g.outputs
    return Comparison(100.0 * agree / _samples(x), snr_db(sum(sig[o] for o in outs),
                                                          sum(noise[o] for o in outs)),
                      {n: snr_db(sig[n], noise[n]) for n in names}, _samples(x))


# ---------------------------------------------------------------- report

@dataclass
class Report:
    method: str
    synthetic: bool                       # calibrated on synthetic data
    comparison: Comparison
    qg: Graph = field(repr=False)
    observed: dict[str, tuple[float, float]] = field(repr=False)

    @property
    def agreement(self) -> float:
        """Top-1 float vs int8 agreement on the calibration data, percent."""
        return self.comparison.agreement

    @property
    def snr_db(self) -> float:
        return self.comparison.snr_db

    def rows(self) -> list[tuple]:
        rows = []
        for x in (self.qg.tensors[n] for n in self.qg.inputs):
            lo, hi = self.observed[x.name]
            rows.append((x.name, "input", f"{x.qparams[0]:.4g}", str(x.qparams[1]), "-",
                         f"{lo:.3g}..{hi:.3g}", f"{self.comparison.tensor_snr_db[x.name]:.1f}"))
        for op in self.qg.ops:
            y = self.qg.tensors[op.outputs[0]]
            s, zp = y.qparams
            w = self.qg.tensor(op.inputs[1]) if ops.get(op.type).weight_axis is not None else None
            wr = f"{w.scale.min():.3g}..{w.scale.max():.3g}" if w is not None else "-"
            lo, hi = self.observed[y.name]
            rows.append((op.name, op.type, f"{s:.4g}", str(zp), wr, f"{lo:.3g}..{hi:.3g}",
                         f"{self.comparison.tensor_snr_db[y.name]:.1f}"))
        if self.synthetic:                 # no SNR figure without its caveat
            rows = [(*r[:-1], f"{r[-1]} (SYNTHETIC data)") for r in rows]
        return rows

    def text(self) -> str:
        head = ("layer", "type", "out scale", "zp", "weight scales", "float range", "SNR dB")
        rows = [head] + self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        data = "SYNTHETIC calibration data" if self.synthetic else "calibration data"
        lines.append(f"float vs {self.qg.input.dtype} on {self.comparison.samples} samples of {data} "
                     f"({self.method}): top-1 agreement {self.agreement:.2f}%, "
                     f"output SNR {self.snr_db:.1f} dB")
        return "\n".join(lines)


def _check_int16_ops(g: Graph) -> None:
    for op in g.ops:
        if not ops.get(op.type).int16:
            covered = ", ".join(k for k, spec in ops.REGISTRY.items() if spec.int16)
            raise TinydsError(f"{g.name}: layer {op.name}: {op.type} has no int16 kernel "
                              f"(--activations int16 covers {covered}); use "
                              "--activations int8")


def synthetic_calibration(g: Graph, n: int = SYNTHETIC_SAMPLES, seed: int = 0):
    """Standard-normal inputs: only good for smoke tests (the caller warns). A list of
    batches for a model with several inputs."""
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((n, *g.tensors[name].shape[1:])).astype(np.float32)
          for name in g.inputs]
    return xs[0] if len(xs) == 1 else xs


def quantize(g: Graph, calib_nhwc: np.ndarray | None, method: str = "minmax", *,
             bias_correction: bool = True, activations: str = "int8"):
    """Quantize an optimized float graph; returns (quantized graph, Report).

    method: "minmax" (TFLite's default), "percentile" (clip each tail at
    99.99%) or "mse" (per-tensor clipping that minimises quantization MSE).
    bias_correction folds the mean output shift caused by weight rounding back
    into the bias; it matters most where outputs vary little between inputs.
    activations: "int8", or "int16" for TFLite's 16x8 scheme (int8 weights, int64 biases).
    """
    if method not in METHODS:
        raise TinydsError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    if activations not in ACTIVATIONS:
        raise TinydsError(f"--activations {activations}: use one of {', '.join(ACTIVATIONS)}")
    _check_graph(g)
    if activations == "int16":
        _check_int16_ops(g)
    synthetic = calib_nhwc is None
    x = synthetic_calibration(g) if synthetic else _check_calib(g, calib_nhwc)
    obs = _observe(g, x, method)
    if method == "mse" and activations == "int16":
        ranges = {name: _mse(o, 65535) for name, o in obs.items()}
    else:
        ranges = {name: RANGE_FNS[method](o) for name, o in obs.items()}
    qg = _build(g, ranges, {n: o.mean for n, o in obs.items()} if bias_correction else None,
                activations)
    report = Report(method, synthetic, compare(g, qg, _take(x, slice(REPORT_SAMPLES))), qg,
                    {name: (o.lo, o.hi) for name, o in obs.items()})
    return qg, report


IO_TYPES = ("int8", "uint8")


def with_io_types(qg: Graph, input_type: str | None = None, output_type: str | None = None,
                  where: str = "") -> Graph:
    """TFLite's inference_input_type / inference_output_type = uint8: each int8 model input
    (output) becomes a uint8 one at the same scale, zero point + 128, with a QUANTIZE
    between it and the int8 layers, as the TFLite converter writes it and TFLM runs it.
    None keeps the model's own type (a .tflite may be uint8 at its edges already)."""
    for kind in (input_type, output_type):
        if kind not in (None, *IO_TYPES):
            raise TinydsError(f"{where or qg.name}: model edge type {kind!r}; use int8 or uint8")
    if "uint8" in (input_type, output_type) and (len(qg.inputs) > 1 or len(qg.outputs) > 1):
        raise TinydsError(f"{where or qg.name}: uint8 edges are supported for one input and one "
                          "output; leave --input-type/--output-type out for this model")
    for names, want, first in ((qg.inputs, input_type, True), (qg.outputs, output_type, False)):
        for i, name in enumerate(names):
            t = qg.tensors[name]
            if want is None or t.dtype == want:
                continue
            if t.dtype != "int8":
                raise TinydsError(f"{where or qg.name}: {'input' if first else 'output'} "
                                  f"{name!r} is {t.dtype}; only an int8 edge can become {want} "
                                  f"(leave --{'input' if first else 'output'}-type out)")
            edge = qg.add_tensor(Tensor(f"{name}/{want}", t.shape, want, scale=t.scale.copy(),
                                        zero_point=t.zero_point + 128))
            if first:
                qg.ops.insert(0, Op("quantize", f"{want}_input", [edge.name], [name]))
            else:
                qg.ops.append(Op("quantize", f"{want}_output", [name], [edge.name]))
            names[i] = edge.name
    return requant.derive_int_params(qg)
