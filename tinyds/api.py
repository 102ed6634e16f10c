"""`tinyds.convert`: the whole pipeline for a model in hand or on disk.

load -> optimize -> quantize (calibration given in the model's own layout) ->
generate. The CLI is a thin wrapper around this.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import calib as calib_data, codegen, names, outdir, targets
from .errors import TinydsError
from .ir import MAX_ELEMENTS, Graph, too_large

@dataclass
class ConvertResult:
    out_dir: Path
    name: str
    arena_bytes: int
    weight_bytes: int
    report: object            # tinyds.quantize.Report
    qg: Graph


def load_graph(module_or_path, allow_pickle: bool = False, example_input=None,
               input_shape=None, default_shape=None) -> tuple[Graph, str]:
    """Float graph and the default model name (file stem or class name).

    default_shape: the input shape for a file that does not record one when input_shape
    is not given (the calibration batch's)."""
    from . import frontends
    if isinstance(module_or_path, (str, Path)):
        path = Path(module_or_path)
        if not path.is_file():
            raise TinydsError(f"{path}: model file not found; check the path")
        shape = {} if input_shape is None else {"input_shape": input_shape}
        return frontends.load(path, allow_pickle=allow_pickle, default_shape=default_shape,
                              **shape), path.stem
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
    float_graph: Graph | None = None   # the optimized float graph (None for an int8 .tflite)


def check_fits(g: Graph, target: targets.Target, optimize: str, source: str,
               activations: str = "int8") -> None:
    """tinyds inspect's verdict, before calibration (which takes minutes on a big net).

    Weights so extreme that no stand-in scale quantizes them skip it: generate's own check
    after calibration still applies, with the scales calibration found."""
    from . import analyze
    try:
        a = analyze.analyze(g, target, optimize, source, activations)
    except (TinydsError, ValueError, OverflowError):
        return
    targets.check_fits(target, a.flash_bytes, a.ram_bytes, source)


def quantize_model(module_or_path, calib=None, method: str = "minmax", allow_pickle: bool = False,
                   input_shape=None, log=print, target: targets.Target | None = None,
                   optimize: str = "speed", activations: str = "int8",
                   input_type: str | None = None, output_type: str | None = None) -> Quantized:
    """load -> optimize -> quantize: the one quantization that generate and export-tflite share.

    target: refuse a model that cannot fit this board (tinyds inspect's check) before
    calibrating.
    activations: "int8", or "int16" for TFLite's 16x8 scheme (a quantized .tflite keeps
    its own).
    input_type, output_type: "uint8" makes that model edge uint8 (quantize.with_io_types);
    None keeps the model's."""
    from .quantize import ACTIVATIONS
    if activations not in ACTIVATIONS:
        raise TinydsError(f"--activations {activations}: use one of {', '.join(ACTIVATIONS)}")
    from .frontends.torchscript import input_shapes
    for shape in input_shapes(input_shape) if input_shape is not None else ():
        if too_large(shape):
            raise TinydsError(f"input shape {tuple(shape)} has more than {MAX_ELEMENTS} "
                              "elements, far beyond a microcontroller's RAM; pass the model's own")
    synthetic = calib_data.is_synthetic(calib)
    calib_from = "calibration data"
    if isinstance(calib, (str, Path)) and not synthetic:
        calib_from, calib = str(calib), calib_data.load(calib, keep_names=True)
    example = None
    if not isinstance(module_or_path, (str, Path)) and (
            (calib is not None and not synthetic) or input_shape):
        example = _examples(module_or_path, calib, input_shape)
    from_calib = None if calib is None or synthetic else calib_data.sample_shapes(calib)
    g, stem = load_graph(module_or_path, allow_pickle, example, input_shape, from_calib)
    from . import passes, quantize, reference
    if not g.is_quantized:
        g = passes.optimize(g)
    if g.is_quantized and activations == "int16" and g.input.dtype != "int16":
        raise TinydsError(f"{module_or_path}: is an int8 model; --activations int16 quantizes "
                          "a float model (export it from PyTorch), or convert it to 16x8 with "
                          "TFLite's converter")
    if target is not None:
        check_fits(g, target, optimize, str(module_or_path) if isinstance(
            module_or_path, (str, Path)) else stem, activations)
    if calib is None and not g.is_quantized:
        raise TinydsError(calib_data.MISSING)
    x = None if calib is None or synthetic else calib_data.for_graph(g, calib, calib_from)
    if g.is_quantized:                     # an int8 .tflite: calib only feeds verify
        qg, report = g, None
        for b, n in zip(x if isinstance(x, list) else [x], qg.inputs) if x is not None else ():
            if tuple(np.shape(b)[1:]) != tuple(qg.tensors[n].shape[1:]):
                raise TinydsError(f"calibration data for input {n!r} has shape {np.shape(b)}, "
                                  f"expected (N, {', '.join(map(str, qg.tensors[n].shape[1:]))}) "
                                  "(NHWC, as the .tflite input); pass a float32 batch of model "
                                  "inputs")
            if not np.isfinite(np.asarray(b, np.float32)).all():
                raise TinydsError("calibration data contains NaN or Inf; remove those samples")
    else:
        if synthetic:
            print(calib_data.SYNTHETIC_WARNING, file=sys.stderr)
        qg, report = quantize.quantize(g, x, method, activations=activations)
        log(report.text())
    qg = quantize.with_io_types(qg, input_type, output_type, stem)
    vectors = None if x is None else reference.pack(quantize.quantize_input(qg, x)) \
        if isinstance(x, list) else quantize.quantize_input(qg, x)
    return Quantized(qg, stem, report, vectors, None if g.is_quantized else g)


def _examples(module, calib, input_shape):
    """One example per forward argument for tracing an nn.Module: zeros of input_shape,
    or the first calibration sample (a dict of batches keyed by forward's argument names)."""
    import inspect

    import torch
    if input_shape:
        from .frontends.torchscript import input_shapes
        xs = [torch.zeros(s) for s in input_shapes(input_shape)]
    else:
        if isinstance(calib, dict):
            args = [a for a in inspect.signature(module.forward).parameters if a in calib]
            calib = [calib[a] for a in args] if len(args) == len(calib) else list(calib.values())
        batches = calib if isinstance(calib, (list, tuple)) else [calib]
        xs = [torch.as_tensor(np.asarray(b[:1], dtype=np.float32)) for b in batches]
    return xs[0] if len(xs) == 1 else xs


def convert(module_or_path, calib=None, mcu: str = "stm32f4", out="out/", name: str | None = None,
            method: str = "minmax", allow_pickle: bool = False, input_shape=None,
            optimize: str = "speed", micropython: bool = False, lib_only: bool = False,
            force: bool = False, labels=None, input_type: str | None = None,
            output_type: str | None = None, log=print, activations: str = "int8"
            ) -> ConvertResult:
    """Model (nn.Module, or a .pt/.pt2/.tflite path) -> out/ with the C library and project.

    calib: float batch in the model's own layout ((N, C, H, W) for PyTorch), a path
    (tinyds.calib.load: .npy, .npz[:name], torch.save()d tensor, folder of .npy), or
    "synthetic" for a smoke test on random inputs; required unless the model is int8 already.
    A model with several inputs takes a list of batches in forward's order, a dict keyed by
    the input names (or input0, input1, ...), or an .npz holding one array per input.
    input_shape: (1, C, H, W) for a scripted TorchScript file, which does not record it
    (a list of shapes, one per input, for several).
    optimize: "speed" (fast int16-weight kernels where the core has DSP; per layer
    int8 when flash would not fit) or "size" (int8 weights, portable kernels).
    micropython: also write out/micropython/, a MicroPython native module per architecture.
    lib_only: write out/lib/NAME/ (and the tinyds.json record) only.
    labels: a class name per output, or a text file of them (one per line): NAME_labels[].
    force: also replace generated files the user edited (src/main.c and files the user
    added are never touched).
    input_type, output_type: "uint8" for a uint8 model input or output (a camera's bytes, as
    TFLite's inference_input_type), "int8", or None to keep the model's.
    activations: "int8", or "int16" for TFLite's 16x8 scheme (int16 activations, int8
    weights, int64 biases; portable kernels).
    """
    from .generate import generate
    from .kernels import KernelOptions
    target = targets.get(mcu)              # an unknown MCU or option fails before any slow work
    KernelOptions.for_target(target, optimize)
    if name is not None:
        names.check_name(name)
    outdir.check_out_dir(Path(out))        # refuse a user's folder before any slow work
    if micropython and activations == "int16":
        from .micropython import NO_MICROPYTHON_INT16
        raise TinydsError(NO_MICROPYTHON_INT16)
    labels_from = str(labels) if isinstance(labels, (str, Path)) else "labels"
    if isinstance(labels, (str, Path)):
        labels = names.read_labels(labels)
    q = quantize_model(module_or_path, calib, method, allow_pickle, input_shape, log, target,
                       optimize, activations, input_type, output_type)
    name = name or names.sanitize_name(q.stem)
    names.check_labels(labels, q.qg.output.size, labels_from)
    # the file name only: generated bytes must not depend on where the model sits
    res = generate(q.qg, out, name, target, q.vectors, source=Path(module_or_path).name
                   if isinstance(module_or_path, (str, Path)) else q.stem,
                   optimize=optimize, micropython=micropython, quant_report=q.report,
                   lib_only=lib_only, force=force, labels=labels or (),
                   tflite=Path(module_or_path).read_bytes() if str(module_or_path).endswith(
                       ".tflite") else None)
    lib = res.library
    log(f"{name}: kernels for {target.name} (--optimize {optimize}):\n"
        + codegen.kernel_report(q.qg, lib))
    log(f"{name}: arena {lib.arena_bytes} bytes (peak of the liveness plan; "
        f"{lib.plan.unshared_size} without reuse), weights {lib.weight_bytes} bytes, "
        f"{lib.num_layers} layers -> {res.out_dir} (report.html)")
    if res.kept:
        log(f"{name}: kept {len(res.kept)} file(s) you edited or added where tinyds writes: "
            f"{', '.join(res.kept)} (--force replaces them)")
    if micropython:
        log(f"{name}: MicroPython native module in {res.out_dir / 'micropython'}:\n  "
            + "\n  ".join(res.micropython))
    return ConvertResult(res.out_dir, name, lib.arena_bytes, lib.weight_bytes, q.report, q.qg)
