"""The cores tinyds compiles for: one row per core. A row says how to compile for it
(gcc flags), what its ISA has (the kernels' choices: DSP, FPU, ARMv6-M, MVE), the
MicroPython natmod architecture that runs on it and the cycle model bench uses.

Adding a core: a row here, its startup/console code in firmware/, and kernel variants
in the ops that have one (chosen by each op's own rule).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Core:
    name: str
    cflags: tuple[str, ...]
    micropython_arch: str          # the natmod ARCH that runs on it (an M7 with a
                                   # single-precision FPU runs armv7emsp code)
    dsp: bool = False              # ARMv7E-M DSP extension (SMLAD & co.)
    fpu: bool = False
    armv6m: bool = False           # Thumb-1 only: faults on unaligned access, no DWT
    mve: bool = False              # Helium vector extension (Armv8.1-M), for kernels to come
    cycle_model: str | None = None  # tinyds.cycles.MODELS key; None: instructions only

    @property
    def cpu(self) -> str:
        """The -mcpu name."""
        return self.cflags[0].split("=", 1)[1]


CORES = {c.name: c for c in [
    Core("cortex-m0plus", ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"), "armv6m",
         armv6m=True),
    Core("cortex-m3", ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"), "armv7m"),
    Core("cortex-m4f", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
         "armv7emsp", dsp=True, fpu=True, cycle_model="m4"),
    Core("cortex-m7f", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
         "armv7emsp", dsp=True, fpu=True, cycle_model="m7"),
    Core("cortex-m7d", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
         "armv7emdp", dsp=True, fpu=True, cycle_model="m7"),
]}
