"""GPTQ checkpoints (AutoGPTQ / GPTQModel; LG's EXAONE-4.0-32B-GPTQ): `qweight` / `qzeros` / `scales` / `g_idx`
read as one lazy `.weight` (a grouped.GroupedTensor).

Layout (reference/llama-cpp-exaone.md section 9), for a Linear with K inputs, N outputs, G groups, b bits:

    qweight int32 [K*b/32, N]   packed along the inputs, the first input in the lowest bits
    qzeros  int32 [G, N*b/32]   packed along the outputs; `checkpoint_format: gptq` (v1) stores zero - 1
    scales  f16   [G, N]
    g_idx   int32 [K]           the group of each input (act-order, `desc_act: true`: not monotonic)
    W[o, i] = (q[i, o] - zero[g_idx[i], o]) * scales[g_idx[i], o]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exaone_gguf.checkpoint.grouped import GroupedTensor, unpack_bits
from exaone_gguf.errors import InputError

BITS = (2, 4, 8)  # what fits whole int32 words (3-bit GPTQ straddles words; llama.cpp refuses it too)
PARTS = ("qweight", "qzeros", "scales", "g_idx")


@dataclass(frozen=True)
class GPTQConfig:
    bits: int
    group_size: int  # -1: one group per output (per channel)
    v1: bool  # checkpoint_format "gptq": zeros stored minus one

    fmt = "GPTQ"

    def wrap(self, tensors: dict[str, Any], config_path: Path | str) -> dict[str, Any]:
        out = dict(tensors)
        modules = sorted(n.removesuffix(".qweight") for n in tensors if n.endswith(".qweight"))
        if not modules:
            raise InputError(
                f"{config_path}: config.json declares GPTQ but no tensor ends in '.qweight'; wrong config?"
            )
        for prefix in modules:
            parts = {p: out.pop(f"{prefix}.{p}", None) for p in PARTS}
            for p in PARTS[:3]:
                if parts[p] is None:
                    raise InputError(f"{parts['qweight'].file.path}: GPTQ layer '{prefix}' lacks '{prefix}.{p}'.")
            if prefix + ".weight" in out:
                raise InputError(
                    f"{out[prefix + '.weight'].file.path}: '{prefix}' has both a float weight and GPTQ tensors."
                )
            out[prefix + ".weight"] = GPTQTensor(prefix, self, **parts)
        return out


def parse_gptq_config(qc: dict, path: Path | str) -> GPTQConfig:
    bits, group = qc.get("bits"), qc.get("group_size", -1)
    fmt = str(qc.get("checkpoint_format", qc.get("format", "gptq"))).lower()
    if bits not in BITS:
        raise InputError(f"{path}: GPTQ with {bits!r} bits is not supported (only 2, 4 or 8); use another export.")
    if not isinstance(group, int) or isinstance(group, bool) or (group <= 0 and group != -1):
        raise InputError(f"{path}: GPTQ group_size {group!r} is not supported (a positive size or -1 is needed).")
    if fmt not in ("gptq", "gptq_v2"):
        raise InputError(
            f"{path}: GPTQ checkpoint_format {fmt!r} is not supported (only 'gptq' and 'gptq_v2'); "
            "save the model in the gptq format."
        )
    if qc.get("dynamic"):
        raise InputError(
            f"{path}: GPTQ 'dynamic' (per-module bits and group sizes) is not supported; use a uniform GPTQ export."
        )
    return GPTQConfig(bits, group, fmt == "gptq")


class GPTQTensor(GroupedTensor):
    fmt = "GPTQ"

    def __init__(self, prefix: str, cfg: GPTQConfig, qweight, qzeros, scales, g_idx=None) -> None:
        self.qweight, self.qzeros, self.scales, self.cfg = qweight, qzeros, scales, cfg
        where = f"{qweight.file.path}: GPTQ layer '{prefix}'"
        per = 32 // cfg.bits
        if qweight.dtype != "I32" or qzeros.dtype != "I32" or len(qweight.shape) != 2 or len(scales.shape) != 2:
            raise InputError(f"{where}: qweight/qzeros must be 2-D int32; the GPTQ checkpoint is damaged.")
        k, n = qweight.shape[0] * per, qweight.shape[1]
        n_groups = scales.shape[0]
        if cfg.group_size != -1 and n_groups != -(-k // cfg.group_size):
            raise InputError(f"{where}: scales has {n_groups} groups, but {k} inputs in groups of {cfg.group_size}.")
        if tuple(scales.shape) != (n_groups, n) or scales.dtype not in ("F16", "BF16", "F32"):
            raise InputError(
                f"{where}: scales has shape {list(scales.shape)} ({scales.dtype}), expected {[n_groups, n]}."
            )
        if tuple(qzeros.shape) != (n_groups, -(-n // per)):
            raise InputError(f"{where}: qzeros has shape {list(qzeros.shape)}, expected {[n_groups, -(-n // per)]}.")
        gi = None
        if g_idx is not None:
            if g_idx.dtype not in ("I32", "I64") or tuple(g_idx.shape) != (k,):
                raise InputError(f"{where}: g_idx has shape {list(g_idx.shape)} ({g_idx.dtype}), expected [{k}] int32.")
            gi = np.asarray(g_idx.raw(), dtype=np.int64)
            if gi.size and (gi.min() < 0 or gi.max() >= n_groups):
                raise InputError(f"{where}: g_idx names groups outside 0..{n_groups - 1}; the checkpoint is damaged.")
        elif k % n_groups:
            raise InputError(f"{where}: {k} inputs do not split into {n_groups} groups, and there is no g_idx.")
        stored = tuple(h for h in (qweight, qzeros, scales, g_idx) if h is not None)
        super().__init__(prefix, (n, k), cfg.bits, n_groups, gi, stored, qweight.file)

    def _codes(self, idx: np.ndarray) -> np.ndarray:
        return unpack_bits(self.qweight.raw()[:, idx], self.bits, self.shape[1], axis=0).T

    def _params(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per = 32 // self.bits
        w0, w1 = int(idx.min()) // per, int(idx.max()) // per + 1  # packed words covering these outputs
        z = unpack_bits(self.qzeros.raw()[:, w0:w1], self.bits, (w1 - w0) * per)[:, idx - per * w0].T
        return z.astype(np.int16) + self.cfg.v1, self.scales.to_f32()[:, idx].T
