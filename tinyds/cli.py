"""tinyds: a small CNN -> int8 C99 for Cortex-M, bit-exact with its NumPy reference.

Subcommands generate, inspect, eval, verify, bench, run and export-tflite. Any TinydsError becomes one line on
stderr and exit status 2; everything else about the work lives in api/verify."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .errors import TinydsError, install_hint
from .ir import MAX_ELEMENTS, too_large


def _generate(args) -> int:
    from .api import convert
    res = convert(args.model, calib=args.calib, mcu=args.mcu, out=args.out, name=args.name,
                  method=args.calib_method, allow_pickle=args.allow_pickle,
                  input_shape=args.input_shape, optimize=args.optimize,
                  micropython=args.micropython, lib_only=args.lib_only, force=args.force,
                  labels=args.labels, input_type=args.input_type, output_type=args.output_type,
                  log=(lambda text: None) if args.quiet else print, activations=args.activations)
    if args.quiet:                       # the one line that says where it went
        print(f"{res.name}: wrote {res.out_dir} (arena {res.arena_bytes} B, weights "
              f"{res.weight_bytes} B)")
    return 0


def _inspect(args) -> int:
    from . import analyze, passes, targets
    from .api import load_graph
    from .kernels import KernelOptions
    target = targets.get(args.mcu)
    KernelOptions.for_target(target, args.optimize)
    g, _ = load_graph(args.model, args.allow_pickle, input_shape=args.input_shape)
    a = analyze.analyze(g if g.is_quantized else passes.optimize(g), target, args.optimize,
                        args.model, args.activations)
    print(a.text())
    return 0 if a.fits else 1


def _eval(args) -> int:
    from . import calib, evaluate, passes, report, verify
    from .api import load_graph, quantize_model
    x, y = evaluate.load_data(args.data, args.labels)
    if args.out is not None:
        if args.calib is not None:
            raise TinydsError(f"--calib {args.calib}: {args.out} already holds the int8 model "
                              "generate calibrated; drop --calib, or drop --out to quantize anew")
        qg = verify.load_output(args.out).qg
        g, _ = load_graph(args.model, args.allow_pickle, input_shape=args.input_shape)
        g = None if g.is_quantized else passes.optimize(g)
        if g is not None and tuple(g.input.shape) != tuple(qg.input.shape):
            raise TinydsError(f"{args.out}: was generated for input {qg.input.shape}, "
                              f"{args.model} takes {g.input.shape}; pass the model it was "
                              "generated from")
        synthetic = report.calibrated_synthetically(Path(args.out))
    else:
        q = quantize_model(args.model, calib=args.calib, method=args.calib_method,
                           allow_pickle=args.allow_pickle, input_shape=args.input_shape,
                           log=lambda text: None, activations=args.activations)
        qg, g, synthetic = q.qg, q.float_graph, q.report is not None and q.report.synthetic
    if len(qg.inputs) > 1 or len(qg.outputs) > 1:
        raise TinydsError(f"{args.model}: has {len(qg.inputs)} inputs and {len(qg.outputs)} "
                          "outputs; tinyds eval measures one-input, one-output classifiers "
                          "(the quantization report and tinyds verify cover this model)")
    layout = qg.source_layout if g is None else g.source_layout
    x = calib.to_nhwc(x, layout, tuple(qg.input.shape[1:]), "test data")
    if tuple(x.shape[1:]) != tuple(qg.input.shape[1:]):
        raise TinydsError(f"{args.data}: test inputs have shape {x.shape} after layout "
                          f"conversion, the model takes (N, {', '.join(map(str, qg.input.shape[1:]))}) "
                          "NHWC; pass inputs in the model's own layout")
    ev = evaluate.evaluate(g, qg, x, y, None if args.out is None else Path(args.out))
    ev.synthetic = synthetic
    print(ev.text())
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,32,32") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,32,32")
    if too_large(dims):
        raise argparse.ArgumentTypeError(f"{text!r} has more than {MAX_ELEMENTS} elements, far "
                                         "beyond a microcontroller's RAM")
    return dims


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of vectors")
    return n


def _verify(args) -> int:
    if args.target == "micropython":
        from .verify_micropython import verify_micropython
        from .verify import RANDOM_VECTORS
        res = verify_micropython(Path(args.out), n_random=args.vectors or RANDOM_VECTORS)
    elif args.target == "qemu":
        from .firmware import verify_qemu
        res = verify_qemu(Path(args.out), n_random=args.vectors or 200, target=_target(args.mcu))
    else:
        from .verify import RANDOM_VECTORS, verify
        res = verify(args.out, n_random=args.vectors or RANDOM_VECTORS)
    print(res.text())
    return 0 if res.ok else 1


def _bench(args) -> int:
    from .bench import bench
    print(bench(Path(args.out), cycles=args.cycles, clock_mhz=args.clock_mhz,
                target=_target(args.mcu)))
    return 0


def _run(args) -> int:
    from .firmware import run_project
    return run_project(Path(args.out), timeout=args.timeout)


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        s = 0.0
    if not s > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return s


def _export_tflite(args) -> int:
    from .api import quantize_model
    from .export_tflite import write_tflite
    for given in (args.model, args.calib):
        if given and Path(args.out).resolve() == Path(given).resolve():
            raise TinydsError(f"{args.out}: is the input {given}; export-tflite never writes over "
                              "its input: choose another -o")
    q = quantize_model(args.model, calib=args.calib, method=args.calib_method,
                       allow_pickle=args.allow_pickle, input_shape=args.input_shape,
                       input_type=args.input_type, output_type=args.output_type,
                       activations=args.activations)
    print(f"wrote {write_tflite(q.qg, args.out)}")
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    """What generate and export-tflite share: they must quantize identically."""
    p.add_argument("model", help="TorchScript .pt, torch.export .pt2, int8 .tflite "
                   "(or a pickled nn.Module with --allow-pickle)")
    p.add_argument("--calib", metavar="DATA|synthetic",
                   help="real model inputs in the model's layout, e.g. (N, C, H, W) for PyTorch: "
                   ".npy, .npz (file.npz:name), a torch.save()d tensor, or a folder of .npy; "
                   "required for a float model. 'synthetic': random inputs, a smoke test only")
    p.add_argument("--calib-method", default="minmax", choices=("minmax", "percentile", "mse"))
    p.add_argument("--activations", default="int8", choices=("int8", "int16"),
                   help="int8 (default), or int16: TFLite's 16x8 scheme (int16 activations, "
                   "int8 weights, int64 biases; portable kernels, twice the arena)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a torch.save()d nn.Module; unpickling runs the file's code")
    _input_shape_arg(p)
    for edge in ("input", "output"):
        p.add_argument(f"--{edge}-type", choices=("int8", "uint8"),
                       help=f"the model's {edge} type (default: the model's own, int8 for a float "
                       f"model); uint8 adds a QUANTIZE as TFLite's inference_{edge}_type does")


def _input_shape_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", type=_shape, metavar="1,C,H,W", action="append",
                   help="input shape for a scripted TorchScript model (traced ones record it); "
                   "once per input, in forward's order, for a model with several inputs")


def _mcu_arg(p: argparse.ArgumentParser) -> None:
    from .targets import NAMES
    p.add_argument("--mcu", default="stm32f4", type=str.lower,
                   help=f"target MCU, any case: {', '.join(NAMES)} (default stm32f4)")


def _target(mcu: str | None):
    """--mcu of verify and bench: a board other than the one generate wrote for, or None."""
    from . import targets
    return None if mcu is None else targets.get(mcu)


def _quiet_arg(p: argparse.ArgumentParser) -> None:
    """-q after the subcommand too; SUPPRESS keeps the top-level value when absent."""
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars, and generate prints only where it wrote")


def parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="tinyds", description=__doc__.split(".")[0])
    p.add_argument("--version", action="version", version=f"tinyds {__version__}")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars, and generate prints only where it wrote")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="model -> int8 C library and firmware project")
    _model_args(g)
    _mcu_arg(g)
    g.add_argument("-o", "--out", default="out", help="output folder (default out/)")
    g.add_argument("--name", help="C symbol prefix (default: the model file's stem)")
    g.add_argument("--optimize", choices=("speed", "size"), default="speed",
                   help="speed (default): int16 weight streams and SMLAD kernels on DSP cores, "
                   "falling back per layer to int8 when flash would not fit; size: int8 weights")
    g.add_argument("--micropython", action="store_true",
                   help="also write out/micropython/: the model as a MicroPython native module "
                   "(.mpy per architecture; building needs MPY_DIR, a MicroPython checkout)")
    g.add_argument("--labels", metavar="labels.txt",
                   help="class names, one per line and one per output: NAME_labels[] in C")
    g.add_argument("--lib-only", action="store_true",
                   help="write only out/lib/NAME/ (the model library) and out/tinyds.json")
    g.add_argument("--force", action="store_true",
                   help="replace generated files you edited (src/main.c and files you added "
                   "are never touched)")
    _quiet_arg(g)
    g.set_defaults(run=_generate)
    i = sub.add_parser("inspect", help="per-layer MACs, params and bytes, the memory plan and "
                       "the MCU budget, in seconds and without calibration data")
    i.add_argument("model", help="a model generate takes")
    _mcu_arg(i)
    i.add_argument("--optimize", choices=("speed", "size"), default="speed")
    i.add_argument("--activations", default="int8", choices=("int8", "int16"),
                   help="int16: the 16x8 model's figures (int16 activations, portable kernels)")
    i.add_argument("--allow-pickle", action="store_true",
                   help="load a torch.save()d nn.Module; unpickling runs the file's code")
    _input_shape_arg(i)
    _quiet_arg(i)
    i.set_defaults(run=_inspect)
    ev = sub.add_parser("eval", help="accuracy on labelled data: float, int8 reference and "
                        "generated C; per class, confusion matrix, agreement, SNR, clipping")
    _model_args(ev)
    ev.add_argument("--data", required=True, help="test inputs in the model's layout: a .npz "
                    "with arrays x and y, or inputs in any --calib format with --labels")
    ev.add_argument("--labels", help="class indices (or one-hot), any --calib format")
    ev.add_argument("--out", help="a folder written by tinyds generate: its int8 model is the "
                    "one evaluated, and its C library runs the data too (host build)")
    _quiet_arg(ev)
    ev.set_defaults(run=_eval)
    v = sub.add_parser("verify", help="compile out/'s C on the host and compare with the reference")
    v.add_argument("out", help="a folder written by tinyds generate")
    v.add_argument("--target", choices=("host", "qemu", "micropython"), default="host",
                   help="host: gcc on this machine; qemu: the firmware on an emulated Cortex-M; "
                   "micropython: the native module in the unix port and in MicroPython on QEMU")
    v.add_argument("--mcu", type=str.lower, help="with --target qemu: build for this MCU "
                   "(default: generate's)")
    v.add_argument("--vectors", type=_count, help="random int8 vectors (default 1000 host and "
                   "micropython, 200 qemu)")
    _quiet_arg(v)
    v.set_defaults(run=_verify)
    b = sub.add_parser("bench", help="instructions and estimated cycles per layer under QEMU, "
                       "flash and RAM bytes")
    b.add_argument("out", help="a folder written by tinyds generate")
    b.add_argument("--clock-mhz", type=float, help="core clock for milliseconds "
                   "(default: the MCU's maximum)")
    b.add_argument("--no-cycles", dest="cycles", action="store_false",
                   help="skip the traced run that estimates cycles (instructions only)")
    b.add_argument("--mcu", type=str.lower, help="build the library for this MCU's core "
                   "(default: generate's)")
    _quiet_arg(b)
    b.set_defaults(run=_bench)
    r = sub.add_parser("run", help="build out/'s firmware and boot it on the MCU's QEMU machine, "
                       "its console on this terminal")
    r.add_argument("out", help="a folder written by tinyds generate")
    r.add_argument("--timeout", type=_seconds, default=60.0,
                   help="seconds before a firmware that does not return is stopped (default 60)")
    r.set_defaults(run=_run)
    e = sub.add_parser("export-tflite", help="write the tinyds-quantized model as an int8 .tflite")
    _model_args(e)
    e.add_argument("-o", "--out", required=True, help="the .tflite file to write")
    _quiet_arg(e)
    e.set_defaults(run=_export_tflite)
    return p


def _terminate(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so generate and verify remove their temporary folders."""
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    from . import progress
    args = parser().parse_args(argv)
    progress.quiet(args.quiet)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.run(args)
    except TinydsError as e:
        print(f"tinyds: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        hint = install_hint(e.name)
        if hint is None:
            raise
        print(f"tinyds: error: tinyds {args.command} needs the Python package that provides "
              f"{e.name.split('.')[0]}, which is not installed: {hint}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
