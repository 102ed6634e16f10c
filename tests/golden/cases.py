"""The golden set: every file generate and export-tflite write for a fixed set of models,
cores and options, as SHA-256 digests (digests.json beside this file).

The restructuring of tinyds must write the same bytes; tests/test_golden.py regenerates
each case through the CLI and compares. After a deliberate change to generated output,
rewrite the digests with `python3 tests/golden/cases.py` and say in the commit which
files changed and why.

Bytes changed on purpose since the digests were first recorded (every .tflite export is
still the same):
- the recorded refusal of `opmix --mcu cortex-m7 --activations int16`: the op registry
  lists the int16 ops in alphabetical order;
- tinyds.json's "fast_layers" and report.json/report.html's kernel column of the 8
  DSP-core speed cases whose average pooling runs SXTAB16 (kws, vww, resnet8 on stm32f4
  and cortex-m7; opmix on stm32f4): inspect and the report called that kernel
  "portable" while generate called it "fast"; all three now say "fast" for every kernel
  that runs DSP instructions (Kernel.dsp);
- arduino/NAME/examples/NAME/sample.h (and the hash tinyds.json records for it) in every
  case with a project: its sample rows were all on one line (a template written for
  another Jinja environment's settings); now one row of 16 values per line, as in
  src/tinyds_sample.h;
- every int8 and 16x8 library's NAME.c and tinyds_dsp.h (so tinyds.json's hashes) in
  the 71 generate cases (only the .tflite exports and the int16 opmix refusal are
  unchanged): one feature macro, TINYDS_DSP (tinyds_dsp.h, from __ARM_FEATURE_DSP or
  -DTINYDS_DSP=1), now keys the portable pointwise conv2d's and fully_connected's DSP
  path, which calls tinyds_dsp.h's primitives with their C twins instead of raw ACLE
  intrinsics under __ARM_FEATURE_SIMD32, so the host can run and check it; NAME.c
  includes tinyds_dsp.h always, not only beside a DSP kernel.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MLPERF = ROOT.parent / "shared" / "models" / "mlperf-tiny"
DIGESTS = Path(__file__).with_name("digests.json")
MCUS = ("stm32f4", "cortex-m0plus", "cortex-m7", "rp2040")
# files built by other tools (mpy-cross's .mpy), not rendered by tinyds
SKIP_SUFFIXES = (".mpy",)


def _case(model: str, *args: str) -> tuple[str, tuple[str, ...]]:
    return " ".join((model, *args)), (model, *args)


def cases() -> dict[str, tuple[str, ...]]:
    """Case id -> (model key, CLI options)."""
    out = {}
    for m in ("kws", "vww", "resnet8", "ad01"):
        for mcu in MCUS:
            for opt in ("speed", "size"):
                out.update([_case(m, "--mcu", mcu, "--optimize", opt)])
    out.update([_case("kws", "--mcu", "stm32f4", "--micropython")])
    for mcu in MCUS:
        for opt in ("speed", "size"):
            for act in ("int8", "int16"):
                out.update([_case("digits", "--mcu", mcu, "--optimize", opt, "--activations", act)])
    out.update([_case("digits", "--mcu", "stm32f4", "--micropython", "--labels")])
    out.update([_case("digits", "--mcu", "cortex-m0plus", "--optimize", "size",
                      "--input-type", "uint8", "--output-type", "uint8")])
    for net in ZOO:
        out.update([_case(net, "--mcu", "stm32f4"), _case(net, "--mcu", "rp2040"),
                    _case(net, "--mcu", "cortex-m0plus", "--optimize", "size"),
                    _case(net, "export-tflite")])
    for net in ZOO_INT16:
        out.update([_case(net, "--mcu", "cortex-m7", "--activations", "int16"),
                    _case(net, "export-tflite", "--activations", "int16")])
    out.update([_case("digits", "export-tflite"),
                _case("digits", "export-tflite", "--activations", "int16")])
    out.update([_case("opmix", "--mcu", "cortex-m7", "--activations", "int16")])  # a refusal
    return out


ZOO = ("opmix", "act_mix", "mobilenet_v3", "conv1d_kws", "mobilenet_v2", "ds_stack")
ZOO_INT16 = ("ds_stack", "dscnn")
TFLITE = {"kws": "kws_ref_model.tflite", "vww": "vww_96_int8.tflite",
          "resnet8": "pretrainedResnet_quant.tflite", "ad01": "ad01_int8.tflite"}


def needs_shared(model: str) -> bool:
    return model in TFLITE


def _model(model: str, work: Path) -> tuple[Path, list[str]]:
    """The model file and its calibration options."""
    if model in TFLITE:
        return MLPERF / TFLITE[model], []
    if model == "digits":
        return ROOT / "examples" / "digits_dscnn.pt", ["--calib", str(ROOT / "examples" / "digits_calib.npy")]
    sys.path.insert(0, str(ROOT / "tests"))
    import models
    net, x = models.build(model, seed=3)
    path = models.save_torchscript(net, x, work / f"{model}.pt")
    calib = work / f"{model}_calib.npy"
    np.save(calib, models.inputs(model, 24, seed=5).numpy())
    return path, ["--calib", str(calib)]


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix not in SKIP_SUFFIXES}


def run(case: str) -> dict[str, str]:
    """Generate one case in a fresh folder: {file: sha256}, or {"error": message}."""
    from tinyds.cli import main
    model, *opts = cases()[case]
    with tempfile.TemporaryDirectory(prefix="tinyds-golden-") as tmp:
        work = Path(tmp)
        path, calib = _model(model, work)
        if "--labels" in opts:
            labels = work / "labels.txt"
            labels.write_text("".join(f"digit {i}\n" for i in range(10)))
            opts.insert(opts.index("--labels") + 1, str(labels))
        out = work / "out"
        if opts[0] == "export-tflite":
            argv = ["export-tflite", str(path), *calib, *opts[1:], "-o", str(work / "model.tflite")]
        else:
            argv = ["generate", str(path), *calib, *opts, "-o", str(out)]
        err = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            rc = main(argv + ["-q"])
        if rc != 0:
            return {"error": err.getvalue().strip().replace(str(work), "WORK")}
        if opts[0] == "export-tflite":
            return {"model.tflite": hashlib.sha256((work / "model.tflite").read_bytes()).hexdigest()}
        return _digests(out)


if __name__ == "__main__":
    wanted = sys.argv[1:] or list(cases())
    known = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
    for c in wanted:
        known[c] = run(c)
        print(c, len(known[c]), "files" if "error" not in known[c] else known[c]["error"], flush=True)
    DIGESTS.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
