"""AutoAWQ GEMM checkpoints: 4-bit `qweight` / `qzeros` / `scales` seen as ordinary lazy `.weight` tensors.

Layout (AutoAWQ `WQLinear_GEMM`, reference/exaone-formats.md section 7), for a Linear with K inputs, N outputs:

    qweight int32 [K, N/8]   nibble i (bits 4i..4i+3) of word j holds output column 8j + AWQ_ORDER[i]
    qzeros  int32 [K/G, N/8] packed the same way
    scales  f16   [K/G, N]
    W[n, k] = (q[k, n] - z[k // G, n]) * s[k // G, n]

`AWQTensor` (a grouped.GroupedTensor) dequantizes rows on demand (exactly, in float32: a 4-bit integer times an
fp16 scale needs at most 15 significant bits) and also hands out the integer codes, so a Q4_1 or Q8_0 file can
keep AWQ's own codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exaone_gguf.checkpoint.grouped import GroupedTensor, dequantize
from exaone_gguf.errors import InputError

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of a word holds column 8j + AWQ_ORDER[i]
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # column 8j + c lives in nibble AWQ_REVERSE_ORDER[c]
_SHIFTS = np.arange(0, 32, 4, dtype=np.uint32)


@dataclass(frozen=True)
class AWQConfig:
    bits: int
    group_size: int
    zero_point: bool
    version: str
    modules_to_not_convert: tuple[str, ...]

    fmt = "AWQ"

    def wrap(self, tensors: dict[str, Any], config_path: Path | str) -> dict[str, Any]:
        return wrap_awq_tensors(tensors, self, config_path)

    def keeps_float(self, module: str) -> bool:
        """transformers' rule: a module whose name contains an entry of modules_to_not_convert stays float."""
        return any(key in module for key in self.modules_to_not_convert)


def parse_awq_config(qc: Any, path: Path | str) -> AWQConfig:
    """AWQ's `quantization_config` -> AWQConfig; anything but GEMM 4-bit with zero points is refused."""
    bits = qc.get("bits", qc.get("w_bit"))
    group = qc.get("group_size", qc.get("q_group_size"))
    version = str(qc.get("version", "gemm")).lower()
    zero_point = qc.get("zero_point", True)
    if version != "gemm":
        raise InputError(f"{path}: AWQ version {version!r} is not supported (only 'gemm'); use a GEMM AWQ export.")
    if bits != 4:
        raise InputError(f"{path}: AWQ with {bits!r} bits is not supported (only 4); use a 4-bit AWQ export.")
    if not isinstance(group, int) or isinstance(group, bool) or group <= 0 or group % 32:
        raise InputError(f"{path}: AWQ group_size {group!r} is not supported (a positive multiple of 32 is needed).")
    if zero_point is not True:
        raise InputError(f"{path}: AWQ without zero points is not supported; use a zero_point AWQ export.")
    skip = qc.get("modules_to_not_convert") or []
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise InputError(f"{path}: AWQ 'modules_to_not_convert' must be a list of module names or null.")
    return AWQConfig(4, group, True, version, tuple(skip))


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """int32 [R, C/8] -> uint8 codes [R, C] in AWQ's nibble order (the mask makes the int32 sign harmless)."""
    words = np.ascontiguousarray(packed).view(np.uint32)
    nibbles = ((words[..., None] >> _SHIFTS) & 0xF).astype(np.uint8)  # [R, C/8, 8], nibble order
    return nibbles[..., list(AWQ_REVERSE_ORDER)].reshape(*packed.shape[:-1], packed.shape[-1] * 8)


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [R, C] (0..15) -> int32 [R, C/8], the inverse of unpack_int4 (AutoAWQ's from_linear order)."""
    codes = np.asarray(codes)
    if codes.shape[-1] % 8 or codes.size and (codes.min() < 0 or codes.max() > 15):
        raise ValueError("pack_int4: codes must be 0..15 with a multiple of 8 columns")
    groups = codes.astype(np.uint32).reshape(*codes.shape[:-1], codes.shape[-1] // 8, 8)
    words = np.zeros(groups.shape[:-1], dtype=np.uint32)
    for i, col in enumerate(AWQ_ORDER):
        words |= groups[..., col] << np.uint32(4 * i)
    return words.view(np.int32)


def quantize_awq(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AutoAWQ's pseudo_quantize_tensor (zero point, 4 bits) of W [N, K]: codes [N, K], zeros and fp16 scales
    [N, K/G]. Used by make-tiny and tests to make AWQ checkpoints from known weights."""
    n, k = w.shape
    g = w.astype(np.float32).reshape(n, k // group_size, group_size)
    lo, hi = g.min(-1), g.max(-1)
    scales = (np.maximum(hi - lo, 1e-5) / 15).astype(np.float16)
    s = scales.astype(np.float32)
    zeros = np.clip(-np.round(lo / s), 0, 15).astype(np.uint8)
    codes = np.clip(np.round(g / s[..., None]) + zeros[..., None], 0, 15).astype(np.uint8)
    return codes.reshape(n, k), zeros, scales


class AWQTensor(GroupedTensor):
    """The dequantized `P.weight` of an AWQ Linear `P`, [N, K] like an HF weight; TensorHandle's interface."""

    fmt = "AWQ"

    def __init__(self, prefix: str, qweight, qzeros, scales, group_size: int) -> None:
        self.qweight, self.qzeros, self.scales, self.group_size = qweight, qzeros, scales, group_size
        k, n8 = qweight.shape if len(qweight.shape) == 2 else (0, 0)
        n, g = n8 * 8, group_size
        where = f"{qweight.file.path}: AWQ layer '{prefix}'"
        if qweight.dtype != "I32" or qzeros.dtype != "I32" or len(qweight.shape) != 2:
            raise InputError(f"{where}: qweight/qzeros must be 2-D int32; the AWQ checkpoint is damaged.")
        if k % g:
            raise InputError(f"{where}: {k} input features are not a multiple of group_size {g}; fix the config.")
        if tuple(qzeros.shape) != (k // g, n8):
            raise InputError(f"{where}: qzeros has shape {list(qzeros.shape)}, expected {[k // g, n8]}.")
        if tuple(scales.shape) != (k // g, n) or scales.dtype not in ("F16", "BF16", "F32"):
            raise InputError(
                f"{where}: scales has shape {list(scales.shape)} ({scales.dtype}), expected {[k // g, n]} F16."
            )
        super().__init__(prefix, (n, k), 4, k // g, None, (qweight, qzeros, scales), qweight.file)

    def _columns(self, packed, idx: np.ndarray) -> np.ndarray:
        """AWQ-packed int32 [R, N/8] -> the codes of output columns `idx`, as rows [r, R]."""
        w0, w1 = int(idx.min()) // 8, int(idx.max()) // 8 + 1  # packed words covering these columns
        return unpack_int4(packed.raw()[:, w0:w1])[:, idx - 8 * w0].T

    def _codes(self, idx: np.ndarray) -> np.ndarray:
        return self._columns(self.qweight, idx)

    def _params(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._columns(self.qzeros, idx), self.scales.to_f32()[:, idx].T


def awq_modules(tensors: dict[str, Any]) -> list[str]:
    return sorted(n[: -len(".qweight")] for n in tensors if n.endswith(".qweight"))


def wrap_awq_tensors(tensors: dict[str, Any], cfg: AWQConfig, config_path: Path | str) -> dict[str, Any]:
    """Replace every AWQ triple by one AWQTensor under `P.weight`; check modules_to_not_convert is honoured."""
    out = dict(tensors)
    modules = awq_modules(tensors)
    if not modules:
        raise InputError(f"{config_path}: config.json declares AWQ but no tensor ends in '.qweight'; wrong config?")
    for prefix in modules:
        if cfg.keeps_float(prefix):
            raise InputError(
                f"{config_path}: '{prefix}' is listed in modules_to_not_convert but is stored quantized; "
                "the weights and config do not match."
            )
        parts = {}
        for part in ("qweight", "qzeros", "scales"):
            name = f"{prefix}.{part}"
            if name not in tensors:
                raise InputError(f"{tensors[prefix + '.qweight'].file.path}: AWQ layer '{prefix}' lacks '{name}'.")
            parts[part] = out.pop(name)
        if prefix + ".weight" in out:
            raise InputError(
                f"{out[prefix + '.weight'].file.path}: '{prefix}' has both a float weight and AWQ tensors."
            )
        out[prefix + ".weight"] = AWQTensor(prefix, parts["qweight"], parts["qzeros"], parts["scales"], cfg.group_size)
    return out


__all__ = [
    "AWQ_ORDER",
    "AWQ_REVERSE_ORDER",
    "AWQConfig",
    "AWQTensor",
    "dequantize",
    "pack_int4",
    "parse_awq_config",
    "quantize_awq",
    "unpack_int4",
    "wrap_awq_tensors",
]
