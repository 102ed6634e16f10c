"""`tinyds eval`: accuracy on labelled held-out data, float vs int8 vs the generated C.

What X-CUBE-AI's `validate` and Edge Impulse's model testing report: top-1 accuracy of the
float model, of the int8 NumPy reference and (given a generated folder) of the compiled C,
per-class accuracy, the int8 confusion matrix, float-vs-int8 agreement and SNR on data the
calibration never saw, and clipping: how much of the data falls outside the ranges the
calibration fixed (the input's, and each layer's output range).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import calib as data_files, float_ref, reference
from .errors import TinydsError
from .ir import Graph
from .quantize import _activations, _chunks, dequantize, quantize_input, snr_db


def load_data(data: str, labels: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, integer labels): test.npz with arrays x and y, or --data x --labels y
    (each in any --calib format); one-hot labels become class indices."""
    if labels is None:
        path, name = data_files._split_name(str(data))
        if path.suffix != ".npz" or name is not None:
            raise TinydsError(f"{data}: --data needs --labels unless it is a .npz holding "
                              "arrays x (inputs) and y (labels)")
        x, y = data_files.load(f"{path}:x"), data_files.load(f"{path}:y")
    else:
        x, y = data_files.load(data), data_files.load(labels)
    where = labels or f"{data}:y"
    if y.ndim == 2:
        y = y.argmax(axis=1)                      # one-hot
    if y.ndim != 1 or len(y) != len(x):
        raise TinydsError(f"{where}: labels have shape {y.shape}, expected ({len(x)},): one "
                          "class index per input")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise TinydsError(f"{where}: labels are not whole numbers; pass class indices")
        y = y.astype(np.int64)
    return x, y.astype(np.int64)


@dataclass
class Evaluation:
    samples: int
    classes: int
    labels: np.ndarray
    int8_pred: np.ndarray
    float_pred: np.ndarray | None         # None for an int8 .tflite (no float model)
    c_pred: np.ndarray | None = None      # the generated C, given an out/ folder
    c_equal_reference: int | None = None  # outputs byte-identical to the reference
    agreement: float | None = None        # float vs int8 top-1, percent
    snr_db: float | None = None           # output SNR, float vs dequantized int8
    input_clipped: float = 0.0            # share of input values outside the input range
    layer_clipped: dict = field(default_factory=dict)   # tensor -> share outside its range
    layer_snr_db: dict = field(default_factory=dict)
    synthetic: bool = False               # the int8 model was calibrated on synthetic data
    dtype: str = "int8"                   # the quantized model's activations (int16: 16x8)

    @staticmethod
    def _acc(pred, y) -> float:
        return 100.0 * float(np.mean(pred == y))

    @property
    def int8_accuracy(self) -> float:
        return self._acc(self.int8_pred, self.labels)

    @property
    def float_accuracy(self) -> float | None:
        return None if self.float_pred is None else self._acc(self.float_pred, self.labels)

    @property
    def c_accuracy(self) -> float | None:
        return None if self.c_pred is None else self._acc(self.c_pred, self.labels)

    def confusion(self, pred=None) -> np.ndarray:
        """Rows: true class, columns: predicted class (the int8 reference's by default)."""
        pred = self.int8_pred if pred is None else pred
        m = np.zeros((self.classes, self.classes), np.int64)
        np.add.at(m, (self.labels, pred), 1)
        return m

    def per_class(self, pred) -> list[float | None]:
        """Accuracy within each true class (recall), None for a class with no sample."""
        return [None if not np.any(self.labels == c) else
                self._acc(pred[self.labels == c], c) for c in range(self.classes)]

    def to_dict(self) -> dict:
        def per_class(pred):
            return None if pred is None else self.per_class(pred)
        return {
            "samples": self.samples, "classes": self.classes,
            "accuracy": {"float": self.float_accuracy, "int8_reference": self.int8_accuracy,
                         "c": self.c_accuracy},
            "per_class_accuracy": {"float": per_class(self.float_pred),
                                   "int8_reference": per_class(self.int8_pred),
                                   "c": per_class(self.c_pred)},
            "confusion_int8": self.confusion().tolist(),
            "agreement": self.agreement, "snr_db": _finite(self.snr_db),
            "c_outputs_equal_reference": self.c_equal_reference,
            "input_clipped": self.input_clipped,
            "layer_clipped": self.layer_clipped,
            "layer_snr_db": {k: _finite(v) for k, v in self.layer_snr_db.items()},
            "synthetic_calibration": self.synthetic,
        }

    def text(self) -> str:
        def pct(v):
            return "-" if v is None else f"{v:.2f}%"
        lines = [f"{self.samples} labelled samples, {self.classes} classes",
                 "top-1 accuracy: float " + (pct(self.float_accuracy) if self.float_pred
                                             is not None else "- (int8 model)")
                 + f", {self.dtype} reference {pct(self.int8_accuracy)}"
                 + ("" if self.c_pred is None else
                    f", generated C {pct(self.c_accuracy)} ({self.c_equal_reference} of "
                    f"{self.samples} outputs byte-identical to the reference)")]
        if self.agreement is not None:
            lines.append(f"float vs {self.dtype} on this data: top-1 agreement {self.agreement:.2f}%, "
                         f"output SNR {self.snr_db:.1f} dB")
        lines.append(f"clipping: {100 * self.input_clipped:.2f}% of input values outside the "
                     "calibrated input range")
        worst = sorted(self.layer_clipped.items(), key=lambda kv: -kv[1])[:3]
        if worst and worst[0][1] > 0:
            lines.append("  most clipped layer outputs: " + ", ".join(
                f"{name} {100 * share:.2f}%" for name, share in worst if share > 0))
        if self.synthetic:                 # every figure of an int8 model calibrated on noise
            lines[1:] = [ln + f" ({self.dtype} calibrated on SYNTHETIC data)" for ln in lines[1:]]
        cols = [("float", self.float_pred), (self.dtype, self.int8_pred), ("C", self.c_pred)]
        cols = [(h, p) for h, p in cols if p is not None]
        lines.append("per class  " + "  ".join(f"{h:>7}" for h, _ in cols) + "  samples")
        per = [self.per_class(p) for _, p in cols]
        for c in range(self.classes):
            lines.append(f"  {c:>7}  " + "  ".join(f"{pct(col[c]):>7}" for col in per)
                         + f"  {int(np.sum(self.labels == c)):>7}")
        m = self.confusion()
        width = max(len(str(m.max())), len(str(self.classes - 1)), 3)
        lines.append(f"confusion ({self.dtype} reference; rows: true class, columns: predicted)"
                     + (f" ({self.dtype} calibrated on SYNTHETIC data)" if self.synthetic else ""))
        lines.append(" " * 9 + " ".join(f"{c:>{width}}" for c in range(self.classes)))
        for c, row in enumerate(m):
            lines.append(f"  {c:>5}  " + " ".join(f"{v:>{width}}" for v in row))
        return "\n".join(lines)


def _finite(v):
    return None if v is None or not np.isfinite(v) else v


def _top1(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1).argmax(axis=1)


def _outside(values: np.ndarray, t) -> int:
    """How many float values lie outside what tensor t's int8 (int16) range can represent."""
    s, zp = t.qparams
    qmin, qmax = t.qrange
    lo, hi = (qmin - zp) * s, (qmax - zp) * s
    return int(np.count_nonzero((values < lo - s / 2) | (values > hi + s / 2)))


def evaluate(g: Graph | None, qg: Graph, x_nhwc: np.ndarray, labels: np.ndarray,
             out: Path | None = None) -> Evaluation:
    """g: the optimized float graph (None for an int8 .tflite); qg: the int8 graph;
    out: a generated folder whose C library also runs the inputs (host build)."""
    classes = qg.output.size
    if labels.min() < 0 or labels.max() >= classes:
        raise TinydsError(f"labels range over {labels.min()}..{labels.max()}, but the model has "
                          f"{classes} outputs; pass class indices 0..{classes - 1}")
    x = np.asarray(x_nhwc, np.float32)
    if not np.all(np.isfinite(x)):
        raise TinydsError("test data contains NaN or Inf; remove those samples")
    xq = quantize_input(qg, x)
    out_name = qg.outputs[0]
    names = _activations(qg) if g is not None else [qg.inputs[0]]
    sig, noise, clipped = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0), \
        dict.fromkeys(names, 0)
    int8_pred, float_pred = [], []
    for start, chunk in _offsets(_chunks(qg, x)):
        q = reference.run_all(qg, xq[start:start + len(chunk)])
        int8_pred.append(_top1(q[out_name]))
        if g is None:
            clipped[qg.inputs[0]] += _outside(chunk, qg.input)
            continue
        f = float_ref.run(g, chunk)
        float_pred.append(_top1(f[out_name]))
        for name in names:
            t = qg.tensors[name]
            sig[name] += float(np.sum(f[name] ** 2))
            noise[name] += float(np.sum((f[name] - dequantize(t, q[name])) ** 2))
            clipped[name] += _outside(f[name], t)
    ev = Evaluation(len(x), classes, labels, np.concatenate(int8_pred),
                    np.concatenate(float_pred) if float_pred else None, dtype=qg.input.dtype)
    sizes = {n: qg.tensors[n].size * len(x) for n in names}
    ev.input_clipped = clipped[qg.inputs[0]] / sizes[qg.inputs[0]]
    if g is not None:
        ev.agreement = 100.0 * float(np.mean(ev.float_pred == ev.int8_pred))
        ev.snr_db = snr_db(sig[out_name], noise[out_name])
        ev.layer_snr_db = {n: snr_db(sig[n], noise[n]) for n in names[1:]}
        ev.layer_clipped = {n: clipped[n] / sizes[n] for n in names[1:]}
    if out is not None:
        got = _run_c(out, qg, xq)
        ev.c_pred = got.argmax(axis=1)
        want = np.concatenate([reference.run(qg, xq[i:i + 256]).reshape(-1, classes)
                               for i in range(0, len(xq), 256)])
        ev.c_equal_reference = int(np.sum(np.all(got == want, axis=1)))
    return ev


def _offsets(chunks):
    start = 0
    for chunk in chunks:
        yield start, chunk
        start += len(chunk)


def _run_c(out: Path, qg: Graph, xq: np.ndarray) -> np.ndarray:
    """The generated library compiled for the host (verify's harness), run on xq."""
    import tempfile

    from . import verify
    o = verify.load_output(out)
    with tempfile.TemporaryDirectory(prefix="tinyds-eval-") as tmp:
        exe = verify.compile_host(o.lib_dir, o.name, Path(tmp), "release")
        return verify.run_host(exe, xq, qg.output.size, out_dtype=qg.output.dtype)
