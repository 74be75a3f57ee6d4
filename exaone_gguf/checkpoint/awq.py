"""AutoAWQ GEMM checkpoints: 4-bit `qweight` / `qzeros` / `scales` seen as ordinary lazy `.weight` tensors.

Layout (AutoAWQ `WQLinear_GEMM`, reference/exaone-formats.md section 7), for a Linear with K inputs, N outputs:

    qweight int32 [K, N/8]   nibble i (bits 4i..4i+3) of word j holds output column 8j + AWQ_ORDER[i]
    qzeros  int32 [K/G, N/8] packed the same way
    scales  f16   [K/G, N]
    W[n, k] = (q[k, n] - z[k // G, n]) * s[k // G, n]

`AWQTensor` dequantizes rows on demand (exactly, in float32: a 4-bit integer times an fp16 scale needs at
most 15 significant bits) and also hands out the integer codes, so a Q4_1 file can keep AWQ's own codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from exaone_gguf.checkpoint.awq_q4_1 import encode_q4_1
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

    def keeps_float(self, module: str) -> bool:
        """transformers' rule: a module whose name contains an entry of modules_to_not_convert stays float."""
        return any(key in module for key in self.modules_to_not_convert)


def parse_awq_config(qc: Any, path: Path | str) -> AWQConfig:
    """`quantization_config` -> AWQConfig; anything but AWQ GEMM 4-bit with zero points is refused."""
    if not isinstance(qc, dict):
        raise InputError(f"{path}: 'quantization_config' must be an object; restore the original config.json.")
    method = qc.get("quant_method")
    if str(method).lower() != "awq":
        raise InputError(
            f"{path}: quantized checkpoints ({method or 'unknown method'}) are not supported; "
            "only AWQ (GEMM, 4-bit) is; convert the unquantized checkpoint."
        )
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


def dequantize(codes: np.ndarray, zeros: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """codes [n, K], zeros/scales [n, K/G] -> W [n, K] float32, exactly (q - z) * s."""
    n, k = codes.shape
    groups = zeros.shape[-1]
    q = codes.reshape(n, groups, k // groups).astype(np.float32)
    z = zeros.astype(np.float32)[..., None]
    s = scales.astype(np.float32)[..., None]
    return ((q - z) * s).reshape(n, k)


class AWQTensor:
    """The dequantized `P.weight` of an AWQ Linear `P`, [N, K] like an HF weight; TensorHandle's interface."""

    dtype = "F32"  # exact dequantized values; `raw` and `to_f32` agree

    def __init__(self, prefix: str, qweight, qzeros, scales, group_size: int) -> None:
        self.name = prefix + ".weight"
        self.qweight, self.qzeros, self.scales, self.group_size = qweight, qzeros, scales, group_size
        self.file = qweight.file  # for messages
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
        self.shape = (n, k)

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def row_numel(self) -> int:
        return self.shape[1]

    def codes(self, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer codes [r, K] (uint8), zeros [r, K/G] (uint8) and scales [r, K/G] (float32) of output rows."""
        idx = np.arange(self.n_rows)[rows]
        if idx.size == 0:
            k, gk = self.shape[1], self.shape[1] // self.group_size
            return np.zeros((0, k), np.uint8), np.zeros((0, gk), np.uint8), np.zeros((0, gk), np.float32)
        w0, w1 = int(idx.min()) // 8, int(idx.max()) // 8 + 1  # packed words covering these columns
        local = idx - 8 * w0
        q = unpack_int4(self.qweight.raw()[:, w0:w1])[:, local].T
        z = unpack_int4(self.qzeros.raw()[:, w0:w1])[:, local].T
        s = self.scales.to_f32()[:, idx].T
        return np.ascontiguousarray(q), np.ascontiguousarray(z), np.ascontiguousarray(s)

    def to_f32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return dequantize(*self.codes(slice(start, stop)))

    def raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.to_f32(start, stop)

    def release(self, start: int = 0, stop: int | None = None) -> None:
        for h in (self.qweight, self.qzeros, self.scales):
            h.release()

    def encode_rows(self, qtype, start: int, stop: int, transform: Callable | None = None) -> np.ndarray | None:
        """Rows [start, stop) stored in `qtype` from AWQ's own codes, or None when `qtype` cannot carry them
        (the caller then quantizes the dequantized rows). `transform` may be a row permutation (Llama q/k)."""
        if getattr(qtype, "name", qtype) != "Q4_1" or self.group_size % 32:
            return None
        rows = np.arange(start, stop)
        if transform is not None:
            moved = np.asarray(transform(rows.astype(np.float64)[:, None]))
            if moved.shape != (stop - start, 1) or sorted(moved[:, 0].tolist()) != rows.tolist():
                return None  # not a pure row permutation: codes cannot follow it
            rows = moved[:, 0].astype(np.int64)
        return encode_q4_1(*self.codes(rows))


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


def awq_config_of(spec) -> AWQConfig | None:
    qc = spec.config.get("quantization_config")
    return None if qc is None else parse_awq_config(qc, spec.config_path or "config.json")


__all__ = [
    "AWQ_ORDER",
    "AWQ_REVERSE_ORDER",
    "AWQConfig",
    "AWQTensor",
    "awq_config_of",
    "dequantize",
    "pack_int4",
    "parse_awq_config",
    "quantize_awq",
    "unpack_int4",
    "wrap_awq_tensors",
]
