"""`tinyds.convert`: the whole pipeline for a model in hand or on disk.

load -> optimize -> quantize (calibration given in the model's own layout) ->
generate. The CLI is a thin wrapper around this.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import codegen
from .errors import TinydsError
from .ir import MAX_ELEMENTS, Graph, too_large

SYNTHETIC_WARNING = (
    "WARNING: no calibration data given; activation ranges come from SYNTHETIC random "
    "inputs, so int8 accuracy on real data is unknown. Pass calib= / --calib with a "
    "batch of real model inputs for a usable model.")


@dataclass
class ConvertResult:
    out_dir: Path
    name: str
    arena_bytes: int
    weight_bytes: int
    report: object            # tinyds.quantize.Report
    qg: Graph


def load_calib(path) -> np.ndarray:
    """A .npy batch, never unpickled."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise TinydsError(f"{path}: calibration file not found; pass a .npy batch of inputs") from None
    except (OSError, ValueError, EOFError) as e:
        raise TinydsError(f"{path}: not a readable .npy array ({e}); save the calibration batch "
                          "with numpy.save") from None


def calib_to_nhwc(g: Graph, calib) -> np.ndarray:
    """The user's batch in the model's own layout -> NHWC; quantize checks the shape."""
    x = np.asarray(calib)
    if g.source_layout == "NCHW" and x.ndim == 4 and len(g.input.shape) == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def load_graph(module_or_path, allow_pickle: bool = False, example_input=None,
               input_shape=None) -> tuple[Graph, str]:
    """Float graph and the default model name (file stem or class name)."""
    from . import frontends
    if isinstance(module_or_path, (str, Path)):
        path = Path(module_or_path)
        if not path.is_file():
            raise TinydsError(f"{path}: model file not found; check the path")
        shape = {} if input_shape is None else {"input_shape": tuple(input_shape)}
        return frontends.load(path, allow_pickle=allow_pickle, **shape), path.stem
    if example_input is None:
        raise TinydsError(f"{type(module_or_path).__name__}: an nn.Module needs its input shape "
                          "to trace; pass calib= or input_shape=(1, C, H, W)")
    return frontends.from_module(module_or_path, example_input), type(module_or_path).__name__


@dataclass
class Quantized:
    qg: Graph
    stem: str                 # default model name
    report: object            # tinyds.quantize.Report, None for an int8 .tflite
    vectors: np.ndarray | None  # the calibration batch quantized, for verify


def quantize_model(module_or_path, calib=None, method: str = "minmax", allow_pickle: bool = False,
                   input_shape=None, log=print, mcu: str | None = None) -> Quantized:
    """load -> optimize -> quantize: the one quantization that generate and export-tflite share.

    mcu: refuse an input larger than its RAM before quantizing, which takes minutes there."""
    if input_shape is not None and too_large(input_shape):
        raise TinydsError(f"input shape {tuple(input_shape)} has more than {MAX_ELEMENTS} "
                          "elements, far beyond a microcontroller's RAM; pass the model's own")
    if isinstance(calib, (str, Path)):
        calib = load_calib(calib)
    example = None
    if not isinstance(module_or_path, (str, Path)) and (calib is not None or input_shape):
        import torch
        example = (torch.zeros(tuple(input_shape)) if input_shape else
                   torch.as_tensor(np.asarray(calib[:1], dtype=np.float32)))
    g, stem = load_graph(module_or_path, allow_pickle, example, input_shape)
    if mcu is not None:
        from . import mcu as mcu_table
        mcu_table.check_fits(mcu, 0, g.input.size, str(module_or_path) if isinstance(
            module_or_path, (str, Path)) else stem)
    from . import quantize
    x = None if calib is None else calib_to_nhwc(g, calib)
    if g.is_quantized:                     # an int8 .tflite: calib only feeds verify
        qg, report = g, None
        if x is not None and tuple(np.shape(x)[1:]) != tuple(qg.input.shape[1:]):
            raise TinydsError(f"calibration data has shape {np.shape(x)}, expected "
                              f"(N, {', '.join(map(str, qg.input.shape[1:]))}) (NHWC, as the "
                              ".tflite input); pass a float32 batch of model inputs")
        if x is not None and not np.isfinite(np.asarray(x, np.float32)).all():
            raise TinydsError("calibration data contains NaN or Inf; remove those samples")
    else:
        from . import passes
        g = passes.optimize(g)
        if calib is None:
            print(SYNTHETIC_WARNING, file=sys.stderr)
        qg, report = quantize.quantize(g, x, method)
        log(report.text())
    vectors = None if x is None else quantize.quantize_input(qg, x)
    return Quantized(qg, stem, report, vectors)


def convert(module_or_path, calib=None, mcu: str = "stm32f4", out="out/", name: str | None = None,
            method: str = "minmax", allow_pickle: bool = False, input_shape=None,
            optimize: str = "speed", micropython: bool = False, lib_only: bool = False,
            force: bool = False, labels=None, log=print) -> ConvertResult:
    """Model (nn.Module, or a .pt/.pt2/.tflite path) -> out/ with the C library and project.

    calib: float batch in the model's own layout ((N, C, H, W) for PyTorch) or a .npy path.
    input_shape: (1, C, H, W) for a scripted TorchScript file, which does not record it.
    optimize: "speed" (fast int16-weight kernels where the core has DSP; per layer
    int8 when flash would not fit) or "size" (int8 weights, portable kernels).
    micropython: also write out/micropython/, a MicroPython native module per architecture.
    lib_only: write out/lib/NAME/ (and the tinyds.json record) only.
    labels: a class name per output, or a text file of them (one per line): NAME_labels[].
    force: also replace generated files the user edited (src/main.c and files the user
    added are never touched).
    """
    from .kernels import Target
    Target.for_mcu(mcu, optimize)          # an unknown MCU or option fails before any slow work
    if name is not None:
        codegen.check_name(name)
    codegen.check_out_dir(Path(out))       # refuse a user's folder before any slow work
    labels_from = str(labels) if isinstance(labels, (str, Path)) else "labels"
    if isinstance(labels, (str, Path)):
        labels = codegen.read_labels(labels)
    q = quantize_model(module_or_path, calib, method, allow_pickle, input_shape, log, mcu)
    name = name or codegen.sanitize_name(q.stem)
    codegen.check_labels(labels, q.qg.output.size, labels_from)
    # the file name only: generated bytes must not depend on where the model sits
    res = codegen.generate(q.qg, out, name, mcu, q.vectors, source=Path(module_or_path).name
                           if isinstance(module_or_path, (str, Path)) else q.stem,
                           optimize=optimize, micropython=micropython, lib_only=lib_only,
                           force=force, labels=labels or (),
                           tflite=Path(module_or_path).read_bytes() if str(module_or_path).endswith(
                               ".tflite") else None)
    lib = res.library
    log(f"{name}: kernels for {mcu} (--optimize {optimize}):\n"
        + codegen.kernel_report(q.qg, lib))
    log(f"{name}: arena {lib.arena_bytes} bytes (peak of the liveness plan; "
        f"{lib.plan.unshared_size} without reuse), weights {lib.weight_bytes} bytes, "
        f"{lib.num_layers} layers -> {res.out_dir}")
    if res.kept:
        log(f"{name}: kept {len(res.kept)} file(s) you edited or added where tinyds writes: "
            f"{', '.join(res.kept)} (--force replaces them)")
    if micropython:
        log(f"{name}: MicroPython native module in {res.out_dir / 'micropython'}:\n  "
            + "\n  ".join(res.micropython))
    return ConvertResult(res.out_dir, name, lib.arena_bytes, lib.weight_bytes, q.report, q.qg)
