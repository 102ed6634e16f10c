"""tinyds: depthwise-separable CNNs to bit-exact int8 C99 firmware for Cortex-M.

`tinyds.convert(module_or_path, calib, mcu="stm32f4", out="out/")` is the Python
entry point; `tinyds generate` / `tinyds verify` the command line one.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

__version__ = "0.1.0"


def data_dir(name: str) -> Path:
    """templates/ or firmware/: package data when installed, the repo folder in a checkout.

    They are plain folders inside the package (no __init__.py), so tinyds.firmware
    the module and tinyds/firmware/ the C sources can coexist.
    """
    installed = Path(str(importlib.resources.files("tinyds"))) / name
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / name


def __getattr__(attr: str):
    # convert pulls in torch; import it only when asked for, so `import tinyds` stays cheap.
    if attr == "convert":
        from .api import convert
        return convert
    raise AttributeError(f"module 'tinyds' has no attribute {attr!r}")
