"""The QEMU machines tinyds verifies and benchmarks on: their memory, the consoles
QEMU models on them (and on which serial port), and the counter that is exact there."""
from __future__ import annotations

from dataclasses import dataclass

K = 1024


@dataclass(frozen=True)
class Machine:
    """A QEMU machine: its memory map and how many bytes of each it really has."""
    name: str
    flash_origin: int
    flash: int
    ram_origin: int
    ram: int
    consoles: tuple = ()  # (console of firmware/board.c, QEMU serial port) QEMU models
    counter: str = ""     # the TINYDS_COUNTER_* that counts instructions under -icount


MACHINES = {m.name: m for m in [
    # STM32F405: 1 MB flash, 128 KB SRAM (the 64 KB CCM is left out); under -icount
    # shift=0 its 1 GHz TIM2 counts executed instructions exactly.
    Machine("netduinoplus2", 0x08000000, 1024 * K, 0x20000000, 128 * K,
            (("stm32f4_usart2", 1),), "TINYDS_COUNTER_TIM2"),
    # MPS2 FPGA images: 4 MB ZBT SSRAM1 for code, 4 MB SSRAM2/3 for data.
    Machine("mps2-an385", 0x00000000, 4096 * K, 0x20000000, 4096 * K, (("cmsdk_uart0", 0),)),
    Machine("mps2-an386", 0x00000000, 4096 * K, 0x20000000, 4096 * K, (("cmsdk_uart0", 0),)),
    Machine("mps2-an500", 0x00000000, 4096 * K, 0x20000000, 4096 * K, (("cmsdk_uart0", 0),)),
    # BBC micro:bit, nRF51822: a real Cortex-M0 (it faults on unaligned accesses) with
    # 256 KB flash and 16 KB SRAM; no counter QEMU models exactly.
    Machine("microbit", 0x00000000, 256 * K, 0x20000000, 16 * K, (("nrf51_uart0", 0),)),
]}

# Where bench counts instructions (its TIM2), and where it reruns ARMv6-M code that fits.
BENCH_MACHINE = "netduinoplus2"
V6M_MACHINE = "microbit"
