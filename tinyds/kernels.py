"""Which C kernel runs each layer -- decided here, at generation time, from the
core and the layer's shape and parameters (CMSIS-NN's one wrapper that picks
the kernel, moved out of the firmware).

Every op has a portable kernel, templates/ops/<op>.c.j2 (a 16x8 conv, depthwise or
fully-connected layer or softmax: <op>_int16.c.j2). On cores with the DSP
extension and with `optimize="speed"`, conv2d and depthwise_conv2d layers that
meet a fast kernel's conditions run templates/ops/<op>_s16.c.j2 instead: int16
weight streams (about twice the flash of int8) and SMLAD. The fast kernels'
C twins (tinyds_dsp.h) are what `tinyds verify` runs on the host. Under "speed"
an ADD on any core reads its operands' rescales from tables (2 KB a layer).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import ops
from .errors import TinydsError
from .ir import Graph, Op

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


@dataclass
class Kernel:
    template: str                # templates/ops/<template>.c.j2
    params: dict = field(repr=False)
    scratch: int = 0             # arena bytes the kernel uses only during its call
    # How the output may share the input's bytes (planner.py):
    #   "pixels": pixel by pixel in order, each pixel's input read before its output is written
    #   "channels": channel by channel, same layout (C_out == C_in)
    #   "window": pixel pairs whose input windows are staged first; the output may
    #             start at most inplace_offset bytes past the input's start
    #   "window_reverse": the same, last pair first; the output may start no
    #             less than inplace_offset bytes past the input's start
    inplace: str | None = None
    note: str = ""               # what the report says about this choice
    inplace_offset: int = 0

    @property
    def fast(self) -> bool:
        return self.template.endswith("_s16")

    @property
    def dsp(self) -> bool:
        """Whether the kernel needs tinyds_dsp.h (fast kernels, SIMD pooling)."""
        return self.fast or bool(self.params.get("simd"))


WIDE = ("conv2d", "depthwise_conv2d", "fully_connected", "softmax")   # 16x8: <op>_int16


def portable(g: Graph, op: Op) -> Kernel:
    try:
        module = ops.get(op.type)
    except (KeyError, ModuleNotFoundError):
        raise TinydsError(f"{g.name}: {op.name}: no C kernel for {op.type}; run "
                          "tinyds.passes.optimize before quantizing") from None
    if op.type in WIDE and g.tensors[op.outputs[0]].dtype == "int16":
        return Kernel(op.type + "_int16", module.c_params_int16(g, op))
    return Kernel(op.type, module.c_params(g, op))


def choose(g: Graph, op: Op, target: KernelOptions = KernelOptions()) -> Kernel:
    """The kernel for one layer (never for a reshape, which emits no code)."""
    fast = (target.dsp and target.optimize == "speed" and g.ops.index(op) not in target.size_layers
            and g.tensors[op.outputs[0]].dtype == "int8")    # 16x8 layers: portable kernels
    if fast and op.type == "conv2d":
        p = ops.get("conv2d").fast_params(g, op)
        if p is not None:
            mode = "pixels" if p["pointwise"] else ("window_reverse" if p["reverse"] else "window")
            return Kernel("conv2d_s16", p, p["scratch"], mode,
                          f"SMLAD int16, requant {p['requant']}", p["inplace_offset"])
    if fast and op.type == "depthwise_conv2d":
        p = ops.get("depthwise_conv2d").fast_params(g, op)
        if p is not None:
            return Kernel("depthwise_conv2d_s16", p, p["scratch"], "channels",
                          f"SMLAD int16 plane, requant {p['requant']}")
    if target.optimize == "speed" and op.type == "add" and g.ops.index(op) not in target.size_layers:
        return Kernel("add", ops.get("add").table_params(g, op),
                      note="operand rescales from two 256-entry tables (2 KB)")
    if fast and op.type == "avg_pool2d":
        p = ops.get("avg_pool2d").c_params(g, op)
        if p["channels"] % 4 == 0 and p["kernel_h"] * p["kernel_w"] <= 256:
            return Kernel("avg_pool2d", {**p, "simd": True}, note="SXTAB16 four channels per word")
    return portable(g, op)
