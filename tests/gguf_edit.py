"""Rewrite a GGUF with deliberate damage, for tests that must see the validator fail.

Reads with the project's strict reader and writes with its streaming writer, so the damaged file is a
well-formed GGUF whose content alone is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.gguf_io.writer import GGUFPlan, write_gguf

DROP = object()


def rewrite(
    src: Path,
    dst: Path,
    kv: dict[str, Any] | None = None,
    tensors: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    swap: tuple[str, str] | None = None,
    drop_tensors: tuple[str, ...] = (),
    add_tensors: dict[str, np.ndarray] | None = None,
) -> Path:
    """kv: key -> new value (same type), (vtype, value[, sub]) for a new key, or DROP.
    tensors: name -> function of the raw bytes (uint8) returning new raw bytes of the same size.
    swap: two tensor names whose data (same type and shape) trade places.
    add_tensors: name -> float32 array, appended as F32 tensors (numpy shape order)."""
    f = read_gguf(src)
    kv, tensors = kv or {}, tensors or {}
    plan = GGUFPlan()
    for key, value in f.metadata.items():
        vtype, sub = f.types[key]
        new = kv.get(key, value)
        if new is DROP:
            continue
        plan.add(key, vtype, new, sub)
    for key, value in kv.items():
        if key not in f.metadata and value is not DROP:
            plan.add(key, *value)
    by_name = {t.name: t for t in f.tensors}
    source = {t.name: t.name for t in f.tensors}
    if swap:
        a, b = swap
        assert by_name[a].shape == by_name[b].shape and by_name[a].tensor_type == by_name[b].tensor_type
        source[a], source[b] = b, a
    for t in f.tensors:
        if t.name in drop_tensors:
            continue
        data = np.array(f.tensor_bytes(by_name[source[t.name]]))
        if t.name in tensors:
            data = tensors[t.name](data)
        plan.add_tensor(t.name, t.shape, t.tensor_type, lambda d=data: [d])
    for name, arr in (add_tensors or {}).items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        plan.add_tensor(
            name, tuple(reversed(arr.shape)), GGMLQuantizationType.F32, lambda d=arr: [d.view(np.uint8).reshape(-1)]
        )
    write_gguf(plan, dst)
    f.close()
    return dst


def scale_f32(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Multiply an F32 tensor's values by `factor`."""
    return lambda raw: (raw.view(np.float32) * np.float32(factor)).view(np.uint8)


def swap_experts(a: int, b: int, n_expert: int) -> Callable[[np.ndarray], np.ndarray]:
    """Raw-bytes edit of a 3-D expert tensor (any type: an expert's rows are contiguous): experts a and b trade
    places."""

    def edit(raw: np.ndarray) -> np.ndarray:
        parts = raw.reshape(n_expert, -1).copy()
        parts[[a, b]] = parts[[b, a]]
        return parts.reshape(-1)

    return edit


def swap_rows(pairs: list[tuple[int, int]], n_rows: int) -> Callable[[np.ndarray], np.ndarray]:
    """Raw-bytes edit of any tensor type (a row's bytes are contiguous): each pair of rows trades places."""

    def edit(raw: np.ndarray) -> np.ndarray:
        rows = raw.reshape(n_rows, -1).copy()
        for a, b in pairs:
            rows[[a, b]] = rows[[b, a]]
        return rows.reshape(-1)

    return edit


def set_rows(
    qtype: GGMLQuantizationType, n_rows: int, rows: dict[int, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """Raw-bytes edit: the given rows replaced by these float32 values, quantized to the tensor's type."""
    from exaone_gguf.quantize.kernels import quantize

    def edit(raw: np.ndarray) -> np.ndarray:
        out = raw.copy().reshape(n_rows, -1)
        for r, values in rows.items():
            out[r] = quantize(np.asarray(values, np.float32).reshape(1, -1), qtype).view(np.uint8).reshape(-1)
        return out.reshape(-1)

    return edit


def rewrite_checkpoint(src: Path, dst: Path, change: Callable) -> Path:
    """A copy of a safetensors checkpoint with every tensor t replaced by change(name, t) (torch tensors; the
    dtype may change, config.json's torch_dtype follows the first tensor's); every other file copied."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    dtypes = set()
    for p in sorted(src.iterdir()):
        if p.suffix != ".safetensors":
            shutil.copy(p, dst / p.name)
            continue
        tensors = {name: change(name, t) for name, t in load_file(p).items()}
        dtypes |= {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.ndim == 2}
        save_file(tensors, dst / p.name, metadata={"format": "pt"})
    cfg = json.loads((dst / "config.json").read_text())
    cfg["torch_dtype"] = dtypes.pop() if len(dtypes) == 1 else cfg.get("torch_dtype")
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def noisy_sibling(src: Path, dst: Path, rel: float = 0.015, seed: int = 0) -> Path:
    """A "fine-tuned sibling" of a checkpoint: every 2-D tensor plus Gaussian noise of `rel` times each row's RMS,
    in the tensor's own dtype."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def noisy(name, t):
        if t.ndim != 2:
            return t
        x = t.float()
        rms = x.pow(2).mean(dim=1, keepdim=True).sqrt()
        return (x + rel * rms * torch.randn(x.shape, generator=gen)).to(t.dtype)

    return rewrite_checkpoint(src, dst, noisy)


__all__ = [
    "rewrite",
    "scale_f32",
    "swap_experts",
    "swap_rows",
    "set_rows",
    "noisy_sibling",
    "rewrite_checkpoint",
    "DROP",
    "GGUFValueType",
]
