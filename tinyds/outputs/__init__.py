"""The writers of an output folder, one module each with one entry point,
`write(job, folder)`: it writes its files into folder (a fresh temporary folder that
tinyds.outdir later moves into out/). Which writers run is data: `select`.

  library      lib/NAME/: the C library and its CMakeLists.txt
  bundle       verify/: the quantized model and test vectors that `tinyds verify` replays
  micropython  micropython/: the library as a MicroPython native module (--micropython)
  report       report.json, report.html
  firmware     Makefile, PlatformIO, link.ld, src/: the bare-metal project
  cmake        CMakeLists.txt, cmake/arm-none-eabi.cmake
  zephyr       zephyr/: a Zephyr module
  arduino      arduino/NAME/: an Arduino library with an example sketch

Adding an output format: a module here with `write(job, folder)`, listed in WRITERS.
Writers read the Job; they never import the checkers (verify, bench, firmware runs).
"""
from __future__ import annotations

from . import arduino, bundle, cmake, firmware, library, micropython, report, zephyr

WRITERS = (library, bundle, micropython, report, firmware, cmake, zephyr, arduino)
LIB_ONLY = (library,)


def select(lib_only: bool = False, with_micropython: bool = False) -> list:
    """The writers generate runs: --lib-only keeps the library alone, --micropython adds
    the native module."""
    chosen = LIB_ONLY if lib_only else WRITERS
    return [w for w in chosen if w is not micropython or with_micropython]
