"""Block-scaled weights: FP8 checkpoints (`quant_method: fp8`, DeepSeek-style; K-EXAONE's quantized release) and
compressed-tensors `float-quantized` / `int-quantized`, read as lazy dequantizing `.weight` handles.

Layout (reference/llama-cpp-exaone.md section 9): `X.weight` F8_E4M3 / F8_E5M2 (or I8) [N, K] beside a float scale
of shape [ceil(N/b0), ceil(K/b1)] for blocks of b0 x b1 (fp8: `X.weight_scale_inv`, `weight_block_size: [128, 128]`;
compressed-tensors: `X.weight_scale`, per channel [N, 1] or per tensor [1]). Despite the name `scale_inv` multiplies:

    W[o, i] = w[o, i] * scale[o // b0, i // b1]

in float32 with one multiplication, the rounding llama.cpp's converter and transformers make (exact where the scale
is bf16: a float8 value has at most 4 significant bits). No ggml type holds float8 codes, so a quantized output type
rounds these exact values once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exaone_gguf.errors import InputError

WEIGHT_DTYPES = ("F8_E4M3", "F8_E5M2")
UNUSED = (".activation_scale", ".input_scale")  # activation scales: llama.cpp computes activations in float


class ScaledTensor:
    """The dequantized `P.weight` [N, K] of a block-scaled Linear `P`; TensorHandle's interface."""

    dtype = "F32"

    def __init__(self, name: str, weight, scale, block: tuple[int, int], fmt: str) -> None:
        self.name, self.weight, self.scale, self.fmt, self.file = name, weight, scale, fmt, weight.file
        self.stored = (weight, scale)
        n, k = weight.shape if len(weight.shape) == 2 else (0, 0)
        self.block = (min(block[0], n) or 1, min(block[1], k) or 1)
        b0, b1 = self.block
        want = (-(-n // b0), -(-k // b1))
        where = f"{weight.file.path}: {fmt} layer '{name}'"
        if len(weight.shape) != 2:
            raise InputError(f"{where}: the weight has shape {list(weight.shape)}, not 2-D; the checkpoint is damaged.")
        if scale.dtype not in ("F32", "BF16", "F16") or int(np.prod(scale.shape)) != want[0] * want[1]:
            raise InputError(
                f"{where}: '{scale.name}' has shape {list(scale.shape)} ({scale.dtype}); blocks of {b0}x{b1} "
                f"need {list(want)} floats."
            )
        self.shape = (n, k)

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def row_numel(self) -> int:
        return self.shape[1]

    def to_f32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        (b0, b1), k = self.block, self.shape[1]
        w = (
            self.weight.to_f32(start, stop)
            if self.weight.dtype != "I8"
            else self.weight.raw(start, stop).astype(np.float32)
        )
        s = self.scale.to_f32().reshape(-(-self.shape[0] // b0), -(-k // b1))
        s = np.repeat(s[start // b0 : -(-stop // b0)], b0, axis=0)[start % b0 : start % b0 + stop - start]
        return w * np.repeat(s, b1, axis=1)[:, :k]

    def raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.to_f32(start, stop)

    def release(self, start: int = 0, stop: int | None = None) -> None:
        self.weight.release(start, stop)
        self.scale.release()


@dataclass(frozen=True)
class FP8Config:
    block: tuple[int, int] | None  # weight_block_size; None: one scale per tensor
    modules_to_not_convert: tuple[str, ...]

    fmt = "FP8"

    def wrap(self, tensors: dict[str, Any], config_path: Path | str) -> dict[str, Any]:
        out = {n: h for n, h in tensors.items() if not n.endswith(UNUSED)}
        scales = sorted(n for n in tensors if n.endswith(".weight_scale_inv"))
        if not scales:
            raise InputError(f"{config_path}: config.json declares FP8 but no tensor ends in '.weight_scale_inv'.")
        for sname in scales:
            wname = sname.removesuffix("_scale_inv")
            w = out.get(wname)
            if w is None or w.dtype not in WEIGHT_DTYPES:
                got = "is missing" if w is None else f"is {w.dtype}"
                raise InputError(
                    f"{tensors[sname].file.path}: '{wname}' {got}; FP8 needs F8_E4M3 or F8_E5M2 beside '{sname}'."
                )
            if any(key in wname for key in self.modules_to_not_convert):
                raise InputError(
                    f"{config_path}: '{wname}' is listed in modules_to_not_convert but is stored as FP8; "
                    "the weights and config do not match."
                )
            block = self.block or tuple(w.shape)
            out[wname] = ScaledTensor(wname, w, out.pop(sname), block, "FP8")
        return out


def parse_fp8_config(qc: dict, path: Path | str) -> FP8Config:
    block = qc.get("weight_block_size")
    if block is not None and not (
        isinstance(block, list) and len(block) == 2 and all(type(b) is int and b > 0 for b in block)
    ):
        raise InputError(f"{path}: FP8 weight_block_size {block!r} is not two positive sizes; fix the config.")
    fmt = str(qc.get("fmt", "e4m3")).lower()
    if fmt not in ("e4m3", "e5m2"):
        raise InputError(f"{path}: FP8 fmt {fmt!r} is not supported (only e4m3 and e5m2).")
    skip = qc.get("modules_to_not_convert") or []
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise InputError(f"{path}: FP8 'modules_to_not_convert' must be a list of module names or null.")
    return FP8Config(tuple(block) if block else None, tuple(skip))
