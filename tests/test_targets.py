"""The --mcu tables: every board row resolves to a core and a QEMU machine the rest of
tinyds can use, and names resolve the way the CLI promises."""
from __future__ import annotations

import pytest

from tinyds import cycles, micropython, targets
from tinyds.errors import TinydsError


def test_names_resolve_in_any_case_and_unknown_ones_list_the_choices():
    assert targets.get("STM32F4") is targets.get("stm32f4")
    with pytest.raises(TinydsError, match="--mcu stm32f9: unknown MCU; choose one of stm32f4, "):
        targets.get("stm32f9")
    assert targets.NAMES[0] == "stm32f4" and "rp2040" in targets.NAMES


@pytest.mark.parametrize("name", targets.NAMES)
def test_every_board_has_a_usable_core_and_machine(name):
    t = targets.get(name)
    assert t.core.micropython_arch in micropython.ARCHS
    assert t.core.cycle_model is None or t.core.cycle_model in cycles.MODELS
    assert t.cflags[0] == f"-mcpu={t.cpu}"
    assert t.machine.consoles, "QEMU must model at least one console of the machine"
    assert t.flash_origin % 4 == 0 and t.ram_origin % 4 == 0 and t.flash > 0 and t.ram > 0


def test_each_qemu_arch_of_micropython_has_a_generic_board():
    for arch in ("armv6m", "armv7m", "armv7emsp"):
        t = targets.for_arch(arch)
        assert t.core.micropython_arch == arch and t.pio_board is None
