"""What an op module declares (its SPEC) and what its kernel rule returns.

An op is one module, tinyds/ops/<kind>.py, ending in `SPEC = OpSpec(...)`: the
shape TFLM gives a kernel registration (init, prepare, invoke), widened to
everything tinyds does with an op. The stages never name ops; they look the
kind up in the registry (tinyds/ops/__init__.py) and call these functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Kernel:
    """One layer's C kernel: templates/ops/<template>.c.j2 rendered with params."""
    template: str
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
    def int16_weights(self) -> bool:
        """Whether its weights are int16 streams (the _dsp SMLAD kernels): about twice
        the flash of int8, the first to fall back to int8 when flash runs out."""
        return self.template.endswith("_dsp")

    @property
    def dsp(self) -> bool:
        """Whether it is chosen for a DSP core (the _dsp kernels, SIMD pooling): what
        generate and inspect both call a "fast" kernel. (Every model includes tinyds_dsp.h:
        the portable pointwise conv2d and FC carry a TINYDS_DSP path as well.)"""
        return self.int16_weights or bool(self.params.get("simd"))


@dataclass
class TFLite:
    """The op as a TFLite builtin operator, read (import) and written (export).

    `read(r, operator, where) -> Op` (or a list of Ops, in order) gets frontends/tflite.py's
    reader (r.tensor, r.err, r.check_shape, r.check_output_shape, r.check_window_output,
    r.same_quant, r.const_ints, r.activation, r.padding, r.weighted_inputs); `write(w, g,
    op)` gets export_tflite.py's writer (w.tensor, w.outputs, w.op, w.options, w.const_i32,
    w.activation, w.padding_code). The op module never imports either."""
    builtin: str                 # BuiltinOperator name
    version: int                 # the op version TFLite gives its int8 form
    read: Callable
    write: Callable
    options: str | None = None   # the BuiltinOptions table the operator must carry
    min_inputs: int = 1


@dataclass
class OpSpec:
    """Everything about one op kind. Functions take (g, op, ...) of the IR (ir.py). A
    float-only kind (folded away by passes) has no reference, c_params or macs."""
    kind: str
    reference: Callable | None   # (g, op, *int inputs) -> int output: the spec the C matches
    c_params: Callable | None    # (g, op) -> the portable template's params
    macs: Callable | None        # (g, op) -> multiply-accumulates of one run
    # (g, op, target) -> Kernel, reading target.dsp, .optimize, .size_layers;
    # None: the portable kernel templates/ops/<kind>.c.j2 with c_params
    choose: Callable | None = None
    float_reference: Callable | None = None   # (g, op, *float batches) -> float batch
    derive: Callable | None = None            # (g, op): integer params into op.attrs (requant)
    # ATen name -> lowering(lo, args, layer), lo being frontends/aten.py's Lowering (lo.emit,
    # lo.const, lo.expect_act, lo.fail, lo.reshape_to, lo.binary, lo.pool_geometry, ...)
    aten: dict = field(default_factory=dict)
    tflite: TFLite | None = None
    int16: bool = False          # has a 16x8 (int16 activations) reference and kernel
    # How the quantizer sets the output's scale and zero point: from calibration, unless
    # the output keeps its input's (same_quant) or TFLite fixes it (fixed_output: dtype ->
    # (scale, zero point)).
    same_quant: bool = False
    fixed_output: dict = field(default_factory=dict)
    weight_axis: int | None = None   # a weighted layer: output channels' axis of inputs[1]
    fuses_activation: bool = False   # a relu/relu6 after it becomes its `activation` clamp
    # Its inputs and output must share one scale and zero point (it copies bytes): the
    # quantizer gives them all the union of their calibration ranges.
    tied_quant: bool = False
    # (g, op) -> the Op the quantizer writes instead (its output calibrated on its own), or
    # None; used where the replacement kind has a kernel for the activations' dtype.
    quantized_as: Callable | None = None
    const_operands: bool = False     # an operand may be a constant, quantized on its own


def at_speed(g, op, target) -> bool:
    """Whether the layer runs under optimize="speed" (and is not one the flash
    fallback keeps at "size")."""
    return target.optimize == "speed" and g.ops.index(op) not in target.size_layers


def dsp_ok(g, op, target) -> bool:
    """Whether the layer may run a DSP kernel: a DSP core, at speed, int8 activations
    (16x8 layers run their portable kernels)."""
    return (target.dsp and at_speed(g, op, target)
            and g.tensors[op.outputs[0]].dtype == "int8")
