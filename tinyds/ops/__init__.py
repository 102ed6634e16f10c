"""One module per op type: `reference` (the integer spec), `c_params` (what its
template templates/ops/<type>.c.j2 needs) and `macs`. Tests live in
tests/ops/test_<type>.py."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..ir import OP_TYPES


def get(op_type: str) -> ModuleType:
    if op_type not in OP_TYPES:
        raise KeyError(op_type)
    return importlib.import_module(f"{__name__}.{op_type}")
