"""`tinyds inspect`: what a model costs on an MCU, in seconds, before any calibration.

A float graph is given stand-in activation scales (standin_ranges): the memory plan,
the kernels and the flash they take depend on shapes and weights, which are known,
not on calibrated scales (a scale moves only the rare layer between the fast and the
portable requantization). Weights are quantized as generate quantizes them. The same
check runs first in `generate`, so a model that cannot fit is refused before the
float runs that calibration takes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import codegen, ops, targets
from .ir import Graph

STANDIN_RANGE = (-1.0, 1.0)
STANDIN_LOG2 = 8
STANDIN_SPREAD = 16.0


@dataclass
class Layer:
    name: str
    op: str
    inputs: list[tuple]       # shapes of the activation inputs
    output: tuple
    macs: int
    params: int               # weights + biases (elements)
    weight_bytes: int         # flash: weights, bias, requant tables (fast stream if fast)
    activation_bytes: int     # the output tensor
    kernel: str               # "fast", "portable" or "" (no code: a reshape)


@dataclass
class Analysis:
    model: str
    target: targets.Target
    optimize: str
    layers: list[Layer]
    arena_bytes: int
    unshared_bytes: int       # the arena without reuse
    input_bytes: int
    output_bytes: int
    input_in_arena: bool
    flash_bytes: int          # the model: weights + kernel code (runtime added by the budget)
    ram_bytes: int            # the model: arena + I/O buffers (stack added by the budget)
    problems: list[str]       # what does not fit; empty when it fits
    timeline: list[list[tuple[str, int, int]]]   # per layer: live (tensor, offset, bytes)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def text(self) -> str:
        m = self.target
        head = ("#", "layer", "op", "input", "output", "MACs", "params", "weight B", "act B",
                "kernel")
        rows = [head] + [(str(i), layer.name[:28], layer.op,
                          " ".join("x".join(map(str, s)) for s in layer.inputs),
                          "x".join(map(str, layer.output)), str(layer.macs), str(layer.params),
                          str(layer.weight_bytes), str(layer.activation_bytes), layer.kernel or "-")
                         for i, layer in enumerate(self.layers)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        right = {0, 5, 6, 7, 8}
        lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                           for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
        need_flash = self.flash_bytes + targets.RUNTIME_FLASH_BYTES
        need_ram = self.ram_bytes + targets.STACK_BYTES
        io = ("input in the arena" if self.input_in_arena else f"input {self.input_bytes} B")
        lines += [
            f"total: {self.macs} MACs, {self.params} params",
            f"arena: {self.arena_bytes} B planned ({self.unshared_bytes} B without reuse); "
            f"{io}, output {self.output_bytes} B",
            f"flash: {need_flash} B of {m.flash} B ({100 * need_flash / m.flash:.1f}%): weights "
            f"and kernels {self.flash_bytes} B + runtime {targets.RUNTIME_FLASH_BYTES} B",
            f"RAM:   {need_ram} B of {m.ram} B ({100 * need_ram / m.ram:.1f}%): arena and I/O "
            f"{self.ram_bytes} B + stack {targets.STACK_BYTES} B",
            f"{self.model} on {m.name} ({m.board}, --optimize {self.optimize}): "
            + ("fits" if self.fits else "DOES NOT FIT: " + ", ".join(self.problems))]
        return "\n".join(lines)


def standin_ranges(g: Graph) -> dict[str, tuple[float, float]]:
    """Activation ranges without data: the input in [-1, 1]; a weighted layer's output wide
    enough that its largest channel's requantization multiplier is 2^-STANDIN_LOG2 (a typical
    trained layer's), so extreme weights give ordinary shifts; other ops keep their input's.
    Every range stays within STANDIN_SPREAD of the input's: a trained net's activations do
    (BatchNorm), and the product of fifty layers' factors would overflow float32."""
    lo, top = STANDIN_RANGE[1] / STANDIN_SPREAD, STANDIN_RANGE[1] * STANDIN_SPREAD
    hi = dict.fromkeys(g.inputs, STANDIN_RANGE[1])
    for op in g.ops:
        x = hi[op.inputs[0]]
        if ops.get(op.type).weight_axis is not None:
            w = float(np.abs(g.tensors[op.inputs[1]].data).max()) or 1.0
            x = x * w * 2.0 ** STANDIN_LOG2
        elif op.type == "add":                 # a constant operand (hardsigmoid's 3) has no range
            x = 2 * max(hi[n] for n in op.inputs if n in hi)
        hi[op.outputs[0]] = float(np.clip(x, lo, top))
    return {name: (-h, h) for name, h in hi.items()}


def standin(g: Graph, activations: str = "int8") -> Graph:
    """A float graph quantized without data (standin_ranges): real int8 weights, and the bias
    that bias correction gives a bias-free layer, so the bytes are generate's; activations
    int8, or int16 (16x8)."""
    from . import quantize
    quantize._check_graph(g)
    if activations == "int16":
        quantize._check_int16_ops(g)
    zeros = {n: np.zeros((1, *g.tensors[n].shape[1:]), np.float32)
             for n in quantize._activations(g)}
    return quantize._build(g, standin_ranges(g), zeros, activations)


def analyze(g: Graph, target: targets.Target, optimize: str = "speed", model: str = "",
            activations: str = "int8") -> Analysis:
    """Per-layer costs, the memory plan and the MCU budget of an optimized float graph
    (or a quantized one, as a .tflite loads)."""
    qg = g if g.is_quantized else standin(g, activations)
    _, lib = codegen.render_for_mcu(qg, "model", target, optimize)
    return of_library(qg, lib, target, optimize, model or g.name)


def of_library(qg: Graph, lib, target: targets.Target, optimize: str, model: str) -> Analysis:
    """The figures of a rendered library (codegen.Library) of the int8 graph qg."""
    layers = []
    for op, k in zip(qg.ops, lib.kernels):
        consts = [n for n in op.inputs if n and qg.tensors[n].is_const]
        y = qg.tensors[op.outputs[0]]
        layers.append(Layer(
            op.name, op.type,
            [tuple(qg.tensors[n].shape) for n in op.inputs if n and not qg.tensors[n].is_const],
            tuple(y.shape), int(ops.get(op.type).macs(qg, op)),
            sum(qg.tensors[n].size for n in consts),
            codegen.layer_weight_bytes(qg, op, k) if k is not None else 0, y.nbytes,
            "" if k is None else ("fast" if k.dsp else "portable")))
    flash = codegen.flash_need(lib)
    ram = lib.plan.ram + qg.output.nbytes
    return Analysis(model, target, optimize, layers, lib.arena_bytes,
                    lib.plan.unshared_size, qg.input.nbytes, qg.output.nbytes,
                    lib.plan.input_in_arena, flash, ram, targets.shortfall(target, flash, ram),
                    timeline(qg, lib.plan))


def timeline(qg: Graph, plan) -> list[list[tuple[str, int, int]]]:
    """For each layer, the arena buffers alive while it runs: (tensor, offset, bytes);
    a kernel's scratch is named scratch:LAYER."""
    return [[(b.tensors[0], b.offset, b.size) for b in plan.buffers
             if b.where == "arena" and b.first <= i <= b.last] for i in range(len(qg.ops))]
