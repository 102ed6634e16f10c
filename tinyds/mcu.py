"""The MCU table: what `--mcu` means for compiler flags, memory budget, the
PlatformIO board, the UART the demo prints on, and the QEMU machine that tests it.

Flash/RAM are what the linker script gets, so the too-big check and the real
link agree. Generic cores describe QEMU's MPS2 FPGA boards (4 MB SSRAM each),
which is where they are tested.
"""
from __future__ import annotations

from dataclasses import dataclass

from tinyds.errors import TinydsError

K = 1024


@dataclass(frozen=True)
class Machine:
    """A QEMU machine: its memory map and how many bytes of each it really has."""
    name: str
    flash_origin: int
    flash: int
    ram_origin: int
    ram: int


MACHINES = {
    # STM32F405: 1 MB flash, 128 KB SRAM (the 64 KB CCM is left out).
    "netduinoplus2": Machine("netduinoplus2", 0x08000000, 1024 * K, 0x20000000, 128 * K),
    # MPS2 FPGA images: 4 MB ZBT SSRAM1 for code, 4 MB SSRAM2/3 for data.
    "mps2-an385": Machine("mps2-an385", 0x00000000, 4096 * K, 0x20000000, 4096 * K),
    "mps2-an386": Machine("mps2-an386", 0x00000000, 4096 * K, 0x20000000, 4096 * K),
    "mps2-an500": Machine("mps2-an500", 0x00000000, 4096 * K, 0x20000000, 4096 * K),
    # BBC micro:bit, nRF51822: a real Cortex-M0 (it faults on unaligned accesses) with
    # 256 KB flash and 16 KB SRAM; no counter QEMU models exactly.
    "microbit": Machine("microbit", 0x00000000, 256 * K, 0x20000000, 16 * K),
}

# Where bench runs ARMv6-M code that fits it (tinyds.bench).
V6M_MACHINE = "microbit"

CORE_FLAGS = {
    "cortex-m0plus": ["-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"],
    "cortex-m3": ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"],
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"],
    "cortex-m4f": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m7f": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"],
    "cortex-m7d": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
}


@dataclass(frozen=True)
class MCU:
    name: str
    core: str              # key of CORE_FLAGS
    fpu: bool
    dsp: bool              # ARMv7E-M DSP extension (SMLAD & co.)
    flash_origin: int
    flash: int
    ram_origin: int
    ram: int
    board: str             # human name of the board the table targets
    pio_platform: str | None
    pio_board: str | None
    console: str           # UART driver in firmware/board.c (TINYDS_CONSOLE_<upper>)
    qemu: str              # key of MACHINES used to verify and benchmark this core
    max_mhz: int           # highest core clock: bench's default for milliseconds
    boot2: bool = False    # flash starts with the RP2040's 256-byte boot2 stage

    @property
    def cflags(self) -> list[str]:
        return list(CORE_FLAGS[self.core])

    @property
    def cpu(self) -> str:
        return self.cflags[0].split("=", 1)[1]

    @property
    def armv6m(self) -> bool:
        return self.core == "cortex-m0plus"

    @property
    def machine(self) -> Machine:
        return MACHINES[self.qemu]


def _generic(name: str, core: str, fpu: bool, dsp: bool, qemu: str, max_mhz: int) -> MCU:
    m = MACHINES[qemu]
    return MCU(name, core, fpu, dsp, m.flash_origin, m.flash, m.ram_origin, m.ram,
               f"Arm MPS2 ({qemu})", None, None, "cmsdk_uart0", qemu, max_mhz)


MCUS = {m.name: m for m in [
    MCU("stm32f4", "cortex-m4f", True, True, 0x08000000, 512 * K, 0x20000000, 128 * K,
        "ST Nucleo-F411RE", "ststm32", "nucleo_f411re", "stm32f4_usart2", "netduinoplus2", 100),
    MCU("stm32f7", "cortex-m7f", True, True, 0x08000000, 1024 * K, 0x20000000, 320 * K,
        "ST Nucleo-F746ZG", "ststm32", "nucleo_f746zg", "stm32f7_usart3", "mps2-an500", 216),
    # H7: the 128 KB DTCM at 0x20000000 only, the AXI SRAM is not used.
    MCU("stm32h7", "cortex-m7d", True, True, 0x08000000, 2048 * K, 0x20000000, 128 * K,
        "ST Nucleo-H743ZI", "ststm32", "nucleo_h743zi", "stm32h7_usart3", "mps2-an500", 480),
    # L4: SRAM1 only (SRAM2 sits at 0x10000000).
    MCU("stm32l4", "cortex-m4f", True, True, 0x08000000, 1024 * K, 0x20000000, 96 * K,
        "ST Nucleo-L476RG", "ststm32", "nucleo_l476rg", "stm32l4_usart2", "mps2-an386", 80),
    MCU("nrf52840", "cortex-m4f", True, True, 0x00000000, 1024 * K, 0x20000000, 256 * K,
        "Nordic nRF52840-DK", "nordicnrf52", "nrf52840_dk", "nrf52_uart0", "mps2-an386", 64),
    # RP2040 has no internal flash: code runs from XIP flash at 0x10000000 after the
    # 256-byte boot2 stage (tinyds/rp2040.py), which the flash size here includes.
    MCU("rp2040", "cortex-m0plus", False, False, 0x10000000, 2048 * K, 0x20000000, 264 * K,
        "Raspberry Pi Pico", "raspberrypi", "pico", "rp2040_uart0", "mps2-an385", 133, boot2=True),
    # Generic cores: the clock of a common part with that core (SAMD21 48 MHz,
    # STM32F103 72 MHz, STM32F407 168 MHz, STM32F746 216 MHz); --clock-mhz overrides.
    _generic("cortex-m0plus", "cortex-m0plus", False, False, "mps2-an385", 48),
    _generic("cortex-m3", "cortex-m3", False, False, "mps2-an385", 72),
    _generic("cortex-m4", "cortex-m4f", True, True, "mps2-an386", 168),
    _generic("cortex-m7", "cortex-m7f", True, True, "mps2-an500", 216),
]}

# Stack reserved by the linker script; the benchmark reports the part really used.
STACK_BYTES = 4 * K
# Startup, libgcc helpers and the demo main on top of the model's own code and weights.
RUNTIME_FLASH_BYTES = 8 * K


def get(name: str) -> MCU:
    try:
        return MCUS[name.lower()]
    except KeyError:
        raise TinydsError(f"--mcu {name}: unknown MCU; choose one of {', '.join(MCUS)}") from None


def shortfall(mcu: str, flash_bytes: int, ram_bytes: int) -> list[str]:
    """What does not fit the MCU ("flash 600 B > 512 B"), runtime and stack included."""
    m = get(mcu)
    need_flash = flash_bytes + RUNTIME_FLASH_BYTES
    need_ram = ram_bytes + STACK_BYTES
    problems = []
    if need_flash > m.flash:
        problems.append(f"flash {need_flash} B > {m.flash} B")
    if need_ram > m.ram:
        problems.append(f"RAM {need_ram} B > {m.ram} B")
    return problems


def check_fits(mcu: str, flash_bytes: int, ram_bytes: int, source: str = "model") -> None:
    """Refuse a model that cannot fit, before anything is written.

    flash_bytes: weights, biases, requant tables and kernel code of the model;
    ram_bytes: its arena plus input/output buffers. The runtime and stack are added here.
    """
    m = get(mcu)
    problems = shortfall(mcu, flash_bytes, ram_bytes)
    if problems:
        raise TinydsError(
            f"{source}: model: does not fit {m.name} ({m.board}): {', '.join(problems)} "
            f"(model {flash_bytes} B flash, {ram_bytes} B RAM; runtime {RUNTIME_FLASH_BYTES} B "
            f"flash, stack {STACK_BYTES} B); choose a bigger --mcu or a smaller model (tinyds inspect "
            "MODEL --mcu MCU shows each layer's bytes)")
