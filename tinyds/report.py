"""out/report.json and out/report.html: what `generate` built, layer by layer.

report.json is for tools (its schema is SCHEMA; tests hold its keys fixed): per layer the
op, shapes, MACs, parameters, weight and activation bytes, kernel, scales and SNR; the
memory plan (every arena buffer with its offset and lifetime, and the live buffers at
each layer); flash and RAM against the MCU; the calibration figures; and, once
`tinyds bench` has run, its instructions and cycles per layer. report.html is the same
for people, self-contained (inline CSS, matplotlib SVG plots, no script, no link): the
arena over time, MACs, SNR and (after bench) instructions and cycles per layer.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path


from . import __version__, analyze, ops, outdir, targets, templating
from .ir import Graph

SCHEMA = "tinyds-report/1"


def _number(v):
    """JSON has no inf/NaN: an exact layer's SNR (no noise) is null."""
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def document(qg: Graph, lib, target: targets.Target, optimize: str, name: str, source: str,
             quant_report=None) -> dict:
    """The report as plain data (report.json). quant_report: tinyds.quantize.Report, None
    for an int8 .tflite (no float model to compare with)."""
    a = analyze.of_library(qg, lib, target, optimize, name)
    snr = quant_report.comparison.tensor_snr_db if quant_report is not None else {}
    layers = []
    for i, (op, layer) in enumerate(zip(qg.ops, a.layers)):
        y = qg.tensors[op.outputs[0]]
        w = qg.tensors[op.inputs[1]] if ops.get(op.type).weight_axis is not None else None
        layers.append({
            "index": i, "name": op.name, "op": op.type,
            "inputs": [list(s) for s in layer.inputs], "output": list(layer.output),
            "macs": layer.macs, "params": layer.params, "weight_bytes": layer.weight_bytes,
            "activation_bytes": layer.activation_bytes, "kernel": layer.kernel,
            "output_scale": float(y.scale[0]), "output_zero_point": int(y.zero_point[0]),
            "weight_scale_min": None if w is None else float(w.scale.min()),
            "weight_scale_max": None if w is None else float(w.scale.max()),
            "snr_db": _number(snr.get(op.outputs[0])),
        })
    m = target
    calibration = None
    if quant_report is not None:
        calibration = {"synthetic": bool(quant_report.synthetic), "method": quant_report.method,
                       "samples": quant_report.comparison.samples,
                       "agreement": quant_report.agreement,
                       "snr_db": _number(quant_report.snr_db)}
    return {
        "schema": SCHEMA, "tinyds_version": __version__, "model": name, "source": source,
        "mcu": m.name, "board": m.board, "optimize": optimize,
        "totals": {"macs": a.macs, "params": a.params, "layers": len(layers)},
        "memory": {"arena_bytes": a.arena_bytes, "unshared_bytes": a.unshared_bytes,
                   "input_bytes": a.input_bytes, "output_bytes": a.output_bytes,
                   "input_in_arena": a.input_in_arena,
                   "flash_bytes": a.flash_bytes + targets.RUNTIME_FLASH_BYTES,
                   "ram_bytes": a.ram_bytes + targets.STACK_BYTES,
                   "mcu_flash_bytes": m.flash, "mcu_ram_bytes": m.ram},
        "calibration": calibration,
        "layers": layers,
        "buffers": [{"tensor": b.tensors[0], "offset": b.offset, "bytes": b.size,
                     "first": b.first, "last": b.last}
                    for b in lib.plan.buffers if b.where == "arena"],
        "timeline": [[{"tensor": t, "offset": off, "bytes": size} for t, off, size in step]
                     for step in a.timeline],
        "bench": None,
    }


def with_bench(doc: dict, b) -> dict:
    """doc with a tinyds.bench.Bench's figures: per layer instructions and estimated cycles
    (None when not estimated), matched by index when bench timed every layer."""
    per_layer = len(b.layers) == len(doc["layers"])
    return {**doc, "bench": {
        "mcu": b.target.name, "machine": b.machine, "total_instructions": b.total_instructions,
        "cycles": b.cycles,
        "cycle_model": b.cycle_model or None,
        "layers": [{"index": la.index, "instructions": la.instructions, "cycles": la.cycles}
                   for la in b.layers] if per_layer else None}}


def calibrated_synthetically(out_dir: Path) -> bool:
    """Whether generate calibrated out_dir's model with --calib synthetic (as its report says)."""
    try:
        doc = json.loads((out_dir / "report.json").read_text())
        return bool((doc.get("calibration") or {}).get("synthetic"))
    except (OSError, ValueError, AttributeError):
        return False


def record_bench(out_dir: Path, b) -> bool:
    """Add bench's figures to out/report.json and out/report.html; False when generate
    wrote no report there (an older output folder)."""
    path = Path(out_dir) / "report.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return False
    write(Path(out_dir), with_bench(doc, b))
    return True


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]          # inline: no XML prolog or doctype


def plots(doc: dict) -> dict[str, str]:
    """Inline SVG: the arena over time, MACs per layer, SNR per layer (when measured)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    plt.rcParams["svg.hashsalt"] = "tinyds"        # stable element ids
    n = len(doc["layers"])
    out = {}
    width = max(6.0, min(14.0, 0.35 * n + 3))

    fig, ax = plt.subplots(figsize=(width, 3.6))
    colors = plt.get_cmap("tab20").colors
    for i, b in enumerate(doc["buffers"]):      # written by layer first, last read by last
        x0 = b["first"] - 0.4 if b["first"] >= 0 else -0.6     # -1: the graph input
        ax.add_patch(Rectangle((x0, b["offset"]), b["last"] + 0.4 - x0, b["bytes"],
                               facecolor=colors[i % len(colors)], edgecolor="black", lw=0.4))
    arena = doc["memory"]["arena_bytes"]
    ax.axhline(arena, color="crimson", lw=1, ls="--", label=f"arena {arena} B")
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_ylim(0, max(arena, 1) * 1.08)
    ax.set_xlabel("layer")
    ax.set_ylabel("arena offset (bytes)")
    ax.set_title("Memory plan: live buffers per layer")
    ax.legend(loc="upper right", fontsize=8)
    out["arena"] = _svg(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(width, 3.0))
    ax.bar(range(n), [layer["macs"] for layer in doc["layers"]], color="steelblue")
    ax.set_xlabel("layer")
    ax.set_ylabel("MACs")
    ax.set_title(f"MACs per layer ({doc['totals']['macs']:,} total)")
    out["macs"] = _svg(fig)
    plt.close(fig)

    snr = [(layer["index"], layer["snr_db"]) for layer in doc["layers"]
           if layer["snr_db"] is not None]
    if snr:
        fig, ax = plt.subplots(figsize=(width, 3.0))
        ax.plot([i for i, _ in snr], [v for _, v in snr], marker="o", color="darkgreen")
        ax.set_xlim(-0.7, n - 0.3)
        ax.set_xlabel("layer")
        ax.set_ylabel("SNR (dB)")
        synthetic = doc["calibration"] and doc["calibration"]["synthetic"]
        ax.set_title("Float vs int8 SNR per layer output"
                     + (" (SYNTHETIC calibration data)" if synthetic else ""))
        out["snr"] = _svg(fig)
        plt.close(fig)

    bench = doc.get("bench")
    if bench and bench["layers"]:
        fig, ax = plt.subplots(figsize=(width, 3.0))
        idx = [la["index"] for la in bench["layers"]]
        ax.bar([i - 0.2 for i in idx], [la["instructions"] for la in bench["layers"]], 0.4,
               label="instructions (QEMU, exact)", color="slategray")
        if bench["cycle_model"]:
            ax.bar([i + 0.2 for i in idx], [la["cycles"] for la in bench["layers"]], 0.4,
                   label=f"cycles (estimated, {bench['cycle_model']})", color="darkorange")
        ax.set_xlabel("layer")
        ax.set_ylabel("count")
        ax.set_title(f"tinyds bench: {bench['mcu']} on QEMU {bench['machine']}, per layer")
        ax.legend(fontsize=8)
        out["bench"] = _svg(fig)
        plt.close(fig)
    return out


def html(doc: dict) -> str:
    return templating.render("report/report.html.j2", doc=doc, plots=plots(doc))


def write(folder: Path, doc: dict) -> None:
    """Replace report.json and report.html (bench rewrites them in an existing out/, whose
    files may be links: renamed over, never written through)."""
    outdir.write_atomic(folder / "report.json", json.dumps(doc, indent=1) + "\n")
    outdir.write_atomic(folder / "report.html", html(doc))
