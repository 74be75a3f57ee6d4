"""compressed-tensors checkpoints (vLLM's llm-compressor; community EXAONE 4.0 w4a16 / w8a8 builds): one config
group of weights, read as lazy dequantizing `.weight` handles.

`pack-quantized` (int, strategy `group` or `channel`; a grouped.GroupedTensor), per Linear with K inputs, N outputs:

    X.weight_packed      int32 [N, ceil(K*b/32)]   packed along the inputs, the first in the lowest bits
    X.weight_scale       float [N, G]              (G = 1 for `channel`)
    X.weight_shape       int   [2]                 (N, K)
    X.weight_zero_point  int32 [ceil(N*b/32), G]   packed along the outputs; absent when symmetric: 2^(b-1)
    X.weight_g_idx       int32 [K]                 (actorder `group` only)
    W[o, i] = (q[o, i] - zero[o, g[i]]) * scale[o, g[i]]

`float-quantized` (float8) and `int-quantized` / `naive-quantized` (int8), strategy `channel`, `tensor` or `block`:
`X.weight` beside `X.weight_scale`, multiplied (fp8.ScaledTensor). Activation settings (`input_activations`) do not
change the weights and are not read: llama.cpp computes activations itself. Anything else a config declares
(several groups, sparsity, transforms, a KV-cache scheme, another format) is refused by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exaone_gguf.checkpoint.fp8 import WEIGHT_DTYPES, ScaledTensor
from exaone_gguf.checkpoint.grouped import GroupedTensor, unpack_bits
from exaone_gguf.errors import InputError

FORMATS = ("pack-quantized", "float-quantized", "int-quantized", "naive-quantized")
UNUSED = (".input_scale", ".input_zero_point", ".output_scale", ".output_zero_point")  # activations


@dataclass(frozen=True)
class CTConfig:
    format: str
    bits: int
    strategy: str
    group_size: int | None
    block: tuple[int, int] | None
    ignore: tuple[str, ...]

    fmt = "compressed-tensors"

    def ignored(self, module: str) -> bool:
        """compressed-tensors' rule: `ignore` lists module names, or `re:` and a regular expression."""
        return any(re.match(p[3:], module) if p.startswith("re:") else module == p for p in self.ignore)

    def wrap(self, tensors: dict[str, Any], config_path: Path | str) -> dict[str, Any]:
        out = {n: h for n, h in tensors.items() if not n.endswith(UNUSED)}
        key = ".weight_packed" if self.format == "pack-quantized" else ".weight_scale"
        modules = sorted(n.removesuffix(key) for n in tensors if n.endswith(key))
        if not modules:
            raise InputError(f"{config_path}: config.json declares {self.format} but no tensor ends in '{key}'.")
        for prefix in modules:
            if self.ignored(prefix):
                raise InputError(
                    f"{config_path}: '{prefix}' is listed in 'ignore' but is stored quantized; "
                    "the weights and config do not match."
                )
            if self.format == "pack-quantized":
                parts = {
                    p: out.pop(f"{prefix}.weight_{p}", None)
                    for p in ("packed", "scale", "shape", "zero_point", "g_idx")
                }
                for p in ("scale", "shape"):
                    if parts[p] is None:
                        raise InputError(f"{parts['packed'].file.path}: layer '{prefix}' lacks '{prefix}.weight_{p}'.")
                if prefix + ".weight" in out:
                    raise InputError(
                        f"{out[prefix + '.weight'].file.path}: '{prefix}' has both a float and a packed weight."
                    )
                out[prefix + ".weight"] = PackedTensor(prefix, self, **parts)
                continue
            w, scale = out.get(prefix + ".weight"), out.pop(prefix + ".weight_scale")
            want = WEIGHT_DTYPES if self.format == "float-quantized" else ("I8",)
            if w is None or w.dtype not in want:
                got = "is missing" if w is None else f"is {w.dtype}"
                raise InputError(
                    f"{scale.file.path}: '{prefix}.weight' {got}; {self.format} stores {' or '.join(want)}."
                )
            if prefix + ".weight_zero_point" in out:
                raise InputError(
                    f"{scale.file.path}: '{prefix}' has a zero point; asymmetric {self.format} is not supported."
                )
            n, k = w.shape
            block = {"channel": (1, k), "tensor": (n, k)}.get(self.strategy, self.block)
            out[prefix + ".weight"] = ScaledTensor(prefix + ".weight", w, scale, block, self.format)
        return out


def _refuse(path, what: str) -> InputError:
    return InputError(f"{path}: compressed-tensors {what} is not supported; convert a checkpoint without it.")


def parse_ct_config(qc: dict, path: Path | str) -> CTConfig:
    for key in ("sparsity_config", "transform_config", "kv_cache_scheme"):
        if qc.get(key):
            raise _refuse(path, f"'{key}'")
    status = qc.get("quantization_status", "compressed")
    if status != "compressed":
        raise _refuse(path, f"quantization_status {status!r} (only 'compressed' is)")
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1 or not isinstance(next(iter(groups.values())), dict):
        n = len(groups) if isinstance(groups, dict) else 0
        raise _refuse(path, f"with {n} config groups (exactly one is)")
    group = next(iter(groups.values()))
    w = group.get("weights")
    fmt = group.get("format") or qc.get("format")
    if fmt not in FORMATS or not isinstance(w, dict):
        raise _refuse(path, f"format {fmt!r} (only {', '.join(FORMATS)} with a 'weights' scheme)")
    bits, strategy, gsize = w.get("num_bits"), w.get("strategy"), w.get("group_size")
    wtype = w.get("type", "int")
    if w.get("dynamic") not in (False, None):
        raise _refuse(path, f"weights 'dynamic': {w.get('dynamic')!r}")
    block = w.get("block_structure")
    if fmt == "pack-quantized":
        if wtype != "int" or bits not in (2, 4, 8):
            raise _refuse(path, f"pack-quantized {wtype} with {bits!r} bits (int with 2, 4 or 8 bits is)")
        if strategy not in ("group", "channel"):
            raise _refuse(path, f"pack-quantized strategy {strategy!r} (group and channel are)")
        if strategy == "group" and (type(gsize) is not int or gsize <= 0):
            raise InputError(
                f"{path}: compressed-tensors group_size {gsize!r} is not a positive integer; fix the config."
            )
    else:
        want = "float" if fmt == "float-quantized" else "int"
        if wtype != want or bits != 8 or w.get("symmetric") is False:
            raise _refuse(path, f"{fmt} {wtype} with {bits!r} bits (symmetric) ({want} 8-bit symmetric is)")
        if strategy not in ("channel", "tensor", "block"):
            raise _refuse(path, f"{fmt} strategy {strategy!r} (channel, tensor and block are)")
        if strategy == "block" and not (
            isinstance(block, list) and len(block) == 2 and all(type(b) is int and b > 0 for b in block)
        ):
            raise InputError(f"{path}: compressed-tensors block_structure {block!r} is not two positive sizes.")
    ignore = qc.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(s, str) for s in ignore):
        raise InputError(f"{path}: compressed-tensors 'ignore' must be a list of module names.")
    return CTConfig(
        fmt, bits, strategy, gsize if strategy == "group" else None, tuple(block) if block else None, tuple(ignore)
    )


class PackedTensor(GroupedTensor):
    fmt = "compressed-tensors"

    def __init__(self, prefix: str, cfg: CTConfig, packed, scale, shape, zero_point=None, g_idx=None) -> None:
        self.packed, self.scale, self.zero_point = packed, scale, zero_point
        where = f"{packed.file.path}: compressed-tensors layer '{prefix}'"
        dims = np.asarray(shape.raw()).reshape(-1).tolist() if shape.dtype in ("I32", "I64") else []
        if len(dims) != 2 or min(dims) <= 0:
            raise InputError(f"{where}: weight_shape {dims} is not two positive sizes; the checkpoint is damaged.")
        n, k = dims
        per = 32 // cfg.bits
        if packed.dtype != "I32" or tuple(packed.shape) != (n, -(-k // per)):
            raise InputError(
                f"{where}: weight_packed has shape {list(packed.shape)} ({packed.dtype}), expected {[n, -(-k // per)]} I32."
            )
        n_groups = 1 if cfg.group_size is None else -(-k // cfg.group_size)
        if tuple(scale.shape) != (n, n_groups) or scale.dtype not in ("F16", "BF16", "F32"):
            raise InputError(
                f"{where}: weight_scale has shape {list(scale.shape)} ({scale.dtype}), expected {[n, n_groups]}."
            )
        if zero_point is not None and (
            zero_point.dtype != "I32" or tuple(zero_point.shape) != (-(-n // per), n_groups)
        ):
            raise InputError(
                f"{where}: weight_zero_point has shape {list(zero_point.shape)}, expected {[-(-n // per), n_groups]} I32."
            )
        gi = None
        if g_idx is not None:
            gi = np.asarray(g_idx.raw(), dtype=np.int64).reshape(-1)
            if gi.size != k or (gi.size and (gi.min() < 0 or gi.max() >= n_groups)):
                raise InputError(f"{where}: weight_g_idx is not {k} group numbers in 0..{n_groups - 1}.")
        elif k % n_groups:
            raise InputError(f"{where}: {k} inputs do not split into {n_groups} groups of {cfg.group_size}.")
        stored = tuple(h for h in (packed, scale, zero_point, g_idx) if h is not None)
        super().__init__(prefix, (n, k), cfg.bits, n_groups, gi, stored, packed.file)

    def _codes(self, idx: np.ndarray) -> np.ndarray:
        lo, hi = int(idx.min()), int(idx.max()) + 1
        return unpack_bits(self.packed.raw(lo, hi)[idx - lo], self.bits, self.shape[1])

    def _params(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.scale.to_f32()[idx]
        if self.zero_point is None:
            return np.full(s.shape, 1 << (self.bits - 1), np.int16), s
        per = 32 // self.bits
        w0, w1 = int(idx.min()) // per, int(idx.max()) // per + 1  # packed words covering these outputs
        z = unpack_bits(self.zero_point.raw(w0, w1), self.bits, (w1 - w0) * per, axis=0)[idx - per * w0]
        return z.astype(np.int16), s
