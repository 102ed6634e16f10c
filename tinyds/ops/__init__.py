"""The op registry: op kind -> OpSpec, found in the modules of this folder.

Each op is one module, tinyds/ops/<kind>.py, that ends in `SPEC = OpSpec(...)`
(ops/spec.py): attrs and validation, float and integer references, the
requantization params it derives, how the quantizer sets its output, its ATen and
TFLite mappings, MACs and its kernel rule. Its C lives in templates/ops/<kind>*.c.j2,
its tests in tests/ops/test_<kind>.py. Modules without a SPEC hold what several ops
share (activation, elementwise, weighted, dsp_gemm). Adding an op is adding those
files (LeakyReLU's is the smallest complete example); ir.py, requant.py,
float_ref.py, quantize.py, kernels.py, the frontends and export_tflite find it here.
"""
from __future__ import annotations

import importlib
import pkgutil

from .spec import Kernel, OpSpec, TFLite


def _discover() -> dict[str, OpSpec]:
    found = {}
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        spec = getattr(importlib.import_module(f"{__name__}.{m.name}"), "SPEC", None)
        if spec is not None:
            found[spec.kind] = spec
    return found


REGISTRY: dict[str, OpSpec] = _discover()


def get(kind: str) -> OpSpec:
    """The spec of an op kind; KeyError for a kind no module declares."""
    return REGISTRY[kind]


__all__ = ["REGISTRY", "Kernel", "OpSpec", "TFLite", "get"]
