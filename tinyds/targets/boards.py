"""The boards `--mcu` names: one row per board, its core and QEMU machine resolved.

Flash/RAM are what the linker script gets, so the too-big check and the real link
agree. Generic cores describe QEMU's MPS2 FPGA boards (4 MB SSRAM each), which is
where they are tested. Adding a board: one row in BOARDS (and its console in
firmware/board.c if its UART is new).
"""
from __future__ import annotations

from dataclasses import dataclass

from .cores import CORES, Core
from .machines import MACHINES, Machine

K = 1024


@dataclass(frozen=True)
class Target:
    """What generate, verify and bench need to know about the board `--mcu` names."""
    name: str
    core: Core
    flash_origin: int
    flash: int
    ram_origin: int
    ram: int
    board: str             # human name of the board the row targets
    pio_platform: str | None
    pio_board: str | None
    console: str           # UART driver in firmware/board.c (TINYDS_CONSOLE_<upper>)
    machine: Machine       # the QEMU machine that verifies and benchmarks this core
    max_mhz: int           # highest core clock: bench's default for milliseconds
    boot2: bool = False    # flash starts with the RP2040's 256-byte boot2 stage

    @property
    def cflags(self) -> list[str]:
        return list(self.core.cflags)

    @property
    def cpu(self) -> str:
        return self.core.cpu

    @property
    def dsp(self) -> bool:
        return self.core.dsp

    @property
    def fpu(self) -> bool:
        return self.core.fpu

    @property
    def armv6m(self) -> bool:
        return self.core.armv6m

    @property
    def qemu(self) -> str:
        return self.machine.name


def _board(name, core, flash_origin, flash, ram_origin, ram, board, pio_platform, pio_board,
           console, qemu, max_mhz, boot2=False) -> Target:
    return Target(name, CORES[core], flash_origin, flash, ram_origin, ram, board, pio_platform,
                  pio_board, console, MACHINES[qemu], max_mhz, boot2)


def _generic(name: str, core: str, qemu: str, max_mhz: int) -> Target:
    m = MACHINES[qemu]
    return _board(name, core, m.flash_origin, m.flash, m.ram_origin, m.ram,
                  f"Arm MPS2 ({qemu})", None, None, "cmsdk_uart0", qemu, max_mhz)


BOARDS = {t.name: t for t in [
    _board("stm32f4", "cortex-m4f", 0x08000000, 512 * K, 0x20000000, 128 * K,
           "ST Nucleo-F411RE", "ststm32", "nucleo_f411re", "stm32f4_usart2", "netduinoplus2", 100),
    _board("stm32f7", "cortex-m7f", 0x08000000, 1024 * K, 0x20000000, 320 * K,
           "ST Nucleo-F746ZG", "ststm32", "nucleo_f746zg", "stm32f7_usart3", "mps2-an500", 216),
    # H7: the 128 KB DTCM at 0x20000000 only, the AXI SRAM is not used.
    _board("stm32h7", "cortex-m7d", 0x08000000, 2048 * K, 0x20000000, 128 * K,
           "ST Nucleo-H743ZI", "ststm32", "nucleo_h743zi", "stm32h7_usart3", "mps2-an500", 480),
    # L4: SRAM1 only (SRAM2 sits at 0x10000000).
    _board("stm32l4", "cortex-m4f", 0x08000000, 1024 * K, 0x20000000, 96 * K,
           "ST Nucleo-L476RG", "ststm32", "nucleo_l476rg", "stm32l4_usart2", "mps2-an386", 80),
    _board("nrf52840", "cortex-m4f", 0x00000000, 1024 * K, 0x20000000, 256 * K,
           "Nordic nRF52840-DK", "nordicnrf52", "nrf52840_dk", "nrf52_uart0", "mps2-an386", 64),
    # RP2040 has no internal flash: code runs from XIP flash at 0x10000000 after the
    # 256-byte boot2 stage (tinyds/rp2040.py), which the flash size here includes.
    _board("rp2040", "cortex-m0plus", 0x10000000, 2048 * K, 0x20000000, 264 * K,
           "Raspberry Pi Pico", "raspberrypi", "pico", "rp2040_uart0", "mps2-an385", 133,
           boot2=True),
    # Generic cores: the clock of a common part with that core (SAMD21 48 MHz,
    # STM32F103 72 MHz, STM32F407 168 MHz, STM32F746 216 MHz); --clock-mhz overrides.
    _generic("cortex-m0plus", "cortex-m0plus", "mps2-an385", 48),
    _generic("cortex-m3", "cortex-m3", "mps2-an385", 72),
    _generic("cortex-m4", "cortex-m4f", "mps2-an386", 168),
    _generic("cortex-m7", "cortex-m7f", "mps2-an500", 216),
]}
