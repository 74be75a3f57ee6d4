"""`exaone-gguf inspect`: a JSON-serializable summary of a GGUF file and its rich rendering."""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from typing import Any

import numpy as np
from gguf import GGUFValueType
from rich.console import Console
from rich.table import Table
from rich.text import Text

from exaone_gguf.gguf_io.reader import GGUFFile
from exaone_gguf.gguf_io.split import SplitGGUF, open_model

ARRAY_HEAD = 5  # array elements shown in the summary
MAX_TENSOR_ROWS = 60  # above this, the tensor table groups per-layer tensors
MAX_VALUE_CHARS = 100  # rendered metadata values are cut here

_LAYER = re.compile(r"^(blk|layers?|model\.layers)\.(\d+)\.")


def _jsonable(v: Any) -> Any:
    """Python scalars only; non-finite floats as strings so strict JSON (allow_nan=False) works."""
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _type_name(vtype: GGUFValueType, sub: GGUFValueType | None) -> str:
    return f"array[{sub.name.lower()}]" if sub is not None else vtype.name.lower()


def _bpw(nbytes: int, params: int) -> float | None:
    return round(nbytes * 8 / params, 4) if params else None


def summarize(f: GGUFFile) -> dict[str, Any]:
    """The inspect summary of an already opened file."""
    metadata: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, value in f.metadata.items():
        vtype, sub = f.types[key]
        types[key] = _type_name(vtype, sub)
        if sub is not None:
            head = [_jsonable(x) for x in list(value[:ARRAY_HEAD])]
            metadata[key] = {"type": "array", "subtype": sub.name.lower(), "length": len(value), "head": head}
        else:
            metadata[key] = _jsonable(value)

    tensors = [
        {
            "name": t.name,
            "type": t.type_name,
            "shape": list(t.shape),
            "n_elements": t.n_elements,
            "nbytes": t.nbytes,
            "offset": t.offset,
        }
        for t in f.tensors
    ]

    by_type: dict[str, dict[str, Any]] = {}
    for t in f.tensors:
        row = by_type.setdefault(t.type_name, {"count": 0, "parameters": 0, "bytes": 0})
        row["count"] += 1
        row["parameters"] += t.n_elements
        row["bytes"] += t.nbytes
    for row in by_type.values():
        row["bits_per_weight"] = _bpw(row["bytes"], row["parameters"])
    params = sum(t.n_elements for t in f.tensors)
    nbytes = sum(t.nbytes for t in f.tensors)
    split = f.split
    return {
        "file": os.fspath(f.path),
        "file_size": f.file_size,
        "version": f.version,
        "alignment": f.alignment,
        "data_offset": f.data_offset,
        "architecture": f.architecture,
        "split": None
        if split is None
        else {"no": split.no, "count": split.count, "tensors_count": split.tensors_count},
        "metadata": metadata,
        "metadata_types": types,
        "tensors": tensors,
        "totals": {
            "kv_count": len(f.metadata),
            "tensor_count": len(f.tensors),
            "parameter_count": params,
            "tensor_bytes": nbytes,
            "bits_per_weight": _bpw(nbytes, params),
            "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["bytes"])),
        },
    }


def inspect_gguf(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse `path` strictly (InputError on a bad file) and return its JSON-serializable summary."""
    with open_model(path) as f:  # shard 1 of a split model: every shard, as llama.cpp loads it
        summary = summarize(f)
        if isinstance(f, SplitGGUF):
            summary["split"]["files"] = [os.fspath(p) for p in f.shard_files]
        return summary


# -- rendering ---------------------------------------------------------------------------------


def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.2f} {unit}"
        x /= 1024
    return f"{n} B"


def _short(v: Any) -> str:
    if isinstance(v, dict) and v.get("type") == "array":
        head = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in v["head"])
        more = ", ..." if v["length"] > len(v["head"]) else ""
        s = f"[{head}{more}] ({v['length']} items)"
    elif isinstance(v, str):
        s = repr(v)
    else:
        s = str(v)
    s = s.replace("\n", "\\n")
    return s if len(s) <= MAX_VALUE_CHARS else s[: MAX_VALUE_CHARS - 1] + "…"


def _group_tensors(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collapse `blk.N.x` across layers into one row per pattern (first-seen order)."""
    groups: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for t in tensors:
        m = _LAYER.match(t["name"])
        pattern = _LAYER.sub(lambda mm: f"{mm.group(1)}.*.", t["name"]) if m else t["name"]
        g = groups.setdefault(
            pattern, {"name": pattern, "layers": [], "types": [], "shapes": [], "n_elements": 0, "nbytes": 0}
        )
        if m:
            g["layers"].append(int(m.group(2)))
        if t["type"] not in g["types"]:
            g["types"].append(t["type"])
        if t["shape"] not in g["shapes"]:
            g["shapes"].append(t["shape"])
        g["n_elements"] += t["n_elements"]
        g["nbytes"] += t["nbytes"]
    return list(groups.values())


def render_inspect(summary: dict[str, Any], console: Console) -> None:
    """Print header, metadata, tensor and totals tables for an `inspect_gguf` summary."""
    tot = summary["totals"]
    head = Table(title=Text(f"GGUF {summary['file']}"), show_header=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row("file size", f"{_human(summary['file_size'])} ({summary['file_size']} bytes)")
    head.add_row("version", str(summary["version"]))
    head.add_row("architecture", str(summary.get("architecture")))
    head.add_row("alignment", str(summary["alignment"]))
    head.add_row("data offset", str(summary["data_offset"]))
    if summary.get("split"):
        s = summary["split"]
        if s.get("files"):  # opened by shard 1: every shard was read, the tables cover the whole model
            head.add_row("split", f"{s['count']} shards, all read ({s['tensors_count']} tensors in all)")
        else:
            head.add_row("split", f"shard {s['no'] + 1} of {s['count']} ({s['tensors_count']} tensors in all)")
    head.add_row("keys / tensors", f"{tot['kv_count']} / {tot['tensor_count']}")
    console.print(head)

    meta = Table(title="Metadata")
    meta.add_column("key", style="cyan", no_wrap=True)
    meta.add_column("type")
    meta.add_column("value", overflow="fold")
    for key, value in summary["metadata"].items():
        # Text, not str: values like "[|endofturn|]" or "array[string]" are not rich markup
        meta.add_row(Text(key), Text(summary["metadata_types"].get(key, "")), Text(_short(value)))
    console.print(meta)

    tensors = summary["tensors"]
    grouped = len(tensors) > MAX_TENSOR_ROWS
    tt = Table(title="Tensors" + (" (grouped by layer pattern)" if grouped else ""))
    tt.add_column("name", style="cyan", no_wrap=True)
    if grouped:
        tt.add_column("layers", justify="right")
    tt.add_column("type")
    tt.add_column("shape (ne)")
    tt.add_column("bytes", justify="right")
    if grouped:
        rows = _group_tensors(tensors)
        for g in rows[:MAX_TENSOR_ROWS]:
            layers = g["layers"]
            lr = f"{len(layers)} ({min(layers)}-{max(layers)})" if layers else ""
            shapes = " | ".join("x".join(map(str, s)) for s in g["shapes"][:3])
            if len(g["shapes"]) > 3:
                shapes += " | …"
            tt.add_row(Text(g["name"]), lr, ",".join(g["types"]), shapes, _human(g["nbytes"]))
        if len(rows) > MAX_TENSOR_ROWS:
            tt.caption = f"{len(rows) - MAX_TENSOR_ROWS} more groups not shown; use --json for all"
    else:
        for t in tensors:
            tt.add_row(Text(t["name"]), t["type"], "x".join(map(str, t["shape"])), _human(t["nbytes"]))
    console.print(tt)

    totals = Table(title="Totals")
    for col in ("type", "tensors", "parameters", "bytes", "bits/weight"):
        totals.add_column(col, justify="left" if col == "type" else "right")
    for name, row in tot["by_type"].items():
        totals.add_row(
            name,
            str(row["count"]),
            f"{row['parameters']:,}",
            _human(row["bytes"]),
            f"{row['bits_per_weight']:.3f}" if row["bits_per_weight"] else "-",
        )
    totals.add_row(
        "all",
        str(tot["tensor_count"]),
        f"{tot['parameter_count']:,}",
        _human(tot["tensor_bytes"]),
        f"{tot['bits_per_weight']:.3f}" if tot["bits_per_weight"] else "-",
        style="bold",
    )
    console.print(totals)
