"""The Target: the board `--mcu` names, resolved once at the edge (cli.py, api.py, or
reading an out/ folder's tinyds.json) and passed down as an object. cores.py holds the
core rows, machines.py the QEMU machines, boards.py one row per board; nothing else in
tinyds names a board or a core.

Also the budget every target shares: the linker's stack and the runtime's flash.
"""
from __future__ import annotations

from ..errors import TinydsError
from .boards import BOARDS, Target
from .cores import CORES, Core
from .machines import BENCH_MACHINE, MACHINES, V6M_MACHINE, Machine

__all__ = ["BENCH_MACHINE", "BOARDS", "CORES", "Core", "MACHINES", "Machine", "NAMES",
           "RUNTIME_FLASH_BYTES", "STACK_BYTES", "Target", "V6M_MACHINE", "check_fits",
           "for_arch", "get", "shortfall"]

K = 1024
NAMES = tuple(BOARDS)
# Stack reserved by the linker script; the benchmark reports the part really used.
STACK_BYTES = 4 * K
# Startup, libgcc helpers and the demo main on top of the model's own code and weights.
RUNTIME_FLASH_BYTES = 8 * K


def get(name: str) -> Target:
    """The board `--mcu NAME` names, in any case."""
    try:
        return BOARDS[name.lower()]
    except KeyError:
        raise TinydsError(f"--mcu {name}: unknown MCU; choose one of {', '.join(BOARDS)}") from None


def for_arch(arch: str) -> Target:
    """The generic (MPS2) board of the first core a MicroPython natmod ARCH runs on."""
    return next(t for t in BOARDS.values() if t.pio_board is None
                and t.core.micropython_arch == arch)


def shortfall(target: Target, flash_bytes: int, ram_bytes: int) -> list[str]:
    """What does not fit the target ("flash 600 B > 512 B"), runtime and stack included."""
    need_flash = flash_bytes + RUNTIME_FLASH_BYTES
    need_ram = ram_bytes + STACK_BYTES
    problems = []
    if need_flash > target.flash:
        problems.append(f"flash {need_flash} B > {target.flash} B")
    if need_ram > target.ram:
        problems.append(f"RAM {need_ram} B > {target.ram} B")
    return problems


def check_fits(target: Target, flash_bytes: int, ram_bytes: int, source: str = "model") -> None:
    """Refuse a model that cannot fit, before anything is written.

    flash_bytes: weights, biases, requant tables and kernel code of the model;
    ram_bytes: its arena plus input/output buffers. The runtime and stack are added here.
    """
    problems = shortfall(target, flash_bytes, ram_bytes)
    if problems:
        raise TinydsError(
            f"{source}: model: does not fit {target.name} ({target.board}): "
            f"{', '.join(problems)} (model {flash_bytes} B flash, {ram_bytes} B RAM; runtime "
            f"{RUNTIME_FLASH_BYTES} B flash, stack {STACK_BYTES} B); choose a bigger --mcu or a "
            "smaller model (tinyds inspect MODEL --mcu MCU shows each layer's bytes)")
