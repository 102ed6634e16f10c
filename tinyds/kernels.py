"""Which C kernel runs each layer -- decided at generation time, from the core and
the layer's shape and parameters (CMSIS-NN's one wrapper that picks the kernel,
moved out of the firmware).

Each op's own rule (OpSpec.choose in tinyds/ops/<kind>.py) picks among its
variants -- portable templates/ops/<kind>.c.j2, a fast DSP one, a table one,
the 16x8 one -- for the layer and the Target; an op without a rule runs its
portable kernel. The fast kernels' C twins (tinyds_dsp.h) are what
`tinyds verify` runs on the host.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ops
from .errors import TinydsError
from .ir import Graph, Op
from .ops import Kernel

OPTIMIZE = ("speed", "size")


@dataclass(frozen=True)
class KernelOptions:
    """What picks each layer's kernel: the core's features and --optimize."""
    dsp: bool = False            # ARMv7E-M DSP extension (Cortex-M4/M7)
    optimize: str = "speed"      # "size": int8 weights everywhere (portable kernels)
    size_layers: frozenset = frozenset()   # op indices kept at "size" under "speed" (flash)

    @classmethod
    def for_target(cls, target, optimize: str = "speed") -> "KernelOptions":
        """For a tinyds.targets.Target."""
        if optimize not in OPTIMIZE:
            raise TinydsError(f"--optimize {optimize}: choose one of {', '.join(OPTIMIZE)}")
        return cls(dsp=target.core.dsp, optimize=optimize)


def choose(g: Graph, op: Op, target: KernelOptions = KernelOptions()) -> Kernel:
    """The kernel for one layer (never for a reshape, which emits no code)."""
    try:
        spec = ops.get(op.type)
    except KeyError:
        spec = None
    if spec is None or spec.reference is None:
        raise TinydsError(f"{g.name}: {op.name}: no C kernel for {op.type}; run "
                          "tinyds.passes.optimize before quantizing")
    if spec.choose is not None:
        return spec.choose(g, op, target)
    return Kernel(op.type, spec.c_params(g, op))
