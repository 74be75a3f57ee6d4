"""The model card's quality chart: mean KLD and same top-1 against bits per weight, one labelled point per
validated variant, as a PNG beside the card's table. The plotted points are read back from the figure and
stored in the PNG's text metadata (key `exaone-gguf:points`), so the file itself says what it shows."""

from __future__ import annotations

import json
import os
from pathlib import Path

from exaone_gguf.publish.card import FileRow

POINTS_KEY = "exaone-gguf:points"


def chart_rows(rows: list[FileRow]) -> list[FileRow]:
    """The variants that have both figures (validated, and the logits were compared)."""
    return [r for r in rows if r.mean_kld is not None and r.same_top1 is not None]


def write_chart(rows: list[FileRow], path: Path, title: str) -> dict:
    """Draw the chart of `rows` into `path` (PNG, written whole or not at all); returns what the figure shows:
    {"points": [{type, bits_per_weight, mean_kld, same_top1}], "axes": [{xlabel, ylabel, yscale}]}, also stored
    in the PNG's text metadata under POINTS_KEY."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display, no global pyplot state
    from matplotlib.figure import Figure

    rows = chart_rows(rows)
    if not rows:
        raise ValueError("no validated variant to chart")
    fig = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_kld, ax_top = fig.subplots(1, 2)
    bpw = [r.bits_per_weight for r in rows]
    series = (
        (ax_kld, [r.mean_kld for r in rows], "mean KL divergence vs source (lower is better)", "tab:red"),
        (ax_top, [r.same_top1 for r in rows], "same top-1 token as source, % (higher is better)", "tab:blue"),
    )
    for ax, ys, ylabel, color in series:
        line = sorted(zip(bpw, ys))  # a faint line in order of size, to read the trade-off
        ax.plot([x for x, _ in line], [y for _, y in line], color=color, alpha=0.35, linewidth=1)
        ax.scatter(bpw, ys, color=color, zorder=3, gid="points")
        for r, x, y in zip(rows, bpw, ys):
            ax.annotate(r.outtype, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
        ax.set_xlabel("bits per weight")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.15, y=0.15)
    if all(y > 0 for y in series[0][1]) and max(series[0][1]) / min(series[0][1]) > 20:
        ax_kld.set_yscale("log")  # BF16 and Q4_K_M differ by orders of magnitude
    fig.suptitle(f"{title}: quality against size")
    shown = {
        "points": read_points(fig, [r.outtype for r in rows]),
        "axes": [{"xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "yscale": ax.get_yscale()} for ax in fig.axes],
    }
    partial = path.with_name(path.name + ".partial")
    try:
        fig.savefig(partial, format="png", metadata={POINTS_KEY: json.dumps(shown)})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return shown


def read_points(fig, labels: list[str]) -> list[dict]:
    """The scatter points as they sit in the figure (data coordinates), paired with their annotations."""
    out = []
    per_axis = []
    for ax in fig.axes:
        [coll] = [c for c in ax.collections if c.get_gid() == "points"]
        names = [t.get_text() for t in ax.texts]
        if names != labels:
            raise RuntimeError(f"chart labels {names} differ from the variants {labels}")
        per_axis.append(coll.get_offsets().tolist())
    kld, top = per_axis
    for name, (x, k), (x2, s) in zip(labels, kld, top):
        if x != x2:
            raise RuntimeError(f"chart: {name} sits at {x} bits per weight in one panel and {x2} in the other")
        out.append({"type": name, "bits_per_weight": float(x), "mean_kld": float(k), "same_top1": float(s)})
    return out
