"""Where the reference forward gets its weights: a mapping by GGUF tensor name (blk.{i}.attn_q.weight ...).

Two adapters give the same view of two different things:

    SourceWeights(checkpoint, mappings)   the HF checkpoint through the family's tensor table, transforms
                                          (Llama's q/k permutation) applied: what a perfect file would hold
    FileWeights(gguf)                     the GGUF's own tensors, dequantized: what the file does hold

Every tensor is float32 in numpy layout (the GGUF shape reversed, the HF shape: [out, in] for weights) and is
read when asked for, so memory stays near one layer plus activations; `rows` reads part of a 2-D tensor
(embedding lookups, the output head in chunks).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from gguf import GGMLQuantizationType as T

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.elements import bf16_bits_to_f32 as bf16_to_f32
from exaone_gguf.elements import f16_bits_to_f32, f32_to_bf16_bits
from exaone_gguf.families import TensorMapping
from exaone_gguf.gguf_io import GGUFFile
from exaone_gguf.quantize import ggml_backend


class Weights(Protocol):
    def __contains__(self, name: str) -> bool: ...

    def get(self, name: str) -> np.ndarray:
        """The whole tensor, float32, numpy layout."""
        ...

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a 2-D tensor, float32 [stop - start, n_cols]."""
        ...

    def n_rows(self, name: str) -> int: ...

    def product_input(self, name: str, x: np.ndarray) -> np.ndarray:
        """x as the runtime feeds it to a matrix product with weight `name` (identity for the source)."""
        ...


class SourceWeights:
    """A checkpoint seen under GGUF names through `mappings` (family_for(spec).tensor_map(spec))."""

    def __init__(self, ckpt: Checkpoint, mappings: list[TensorMapping]) -> None:
        self.ckpt = ckpt
        self.by_gguf = {m.gguf_name: m for m in mappings}

    def __contains__(self, name: str) -> bool:
        return name in self.by_gguf

    def get(self, name: str) -> np.ndarray:
        m = self.by_gguf[name]
        handle = m.open(self.ckpt.tensors)
        x = handle.to_f32().reshape(m.hf_shape)
        handle.release()  # the mmap pages behind it are dropped right away
        return x if m.transform is None else m.transform(x)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        m = self.by_gguf[name]
        if m.transform is not None:  # a permutation works on whole row groups: read it all
            return self.get(name)[start:stop]
        handle = m.open(self.ckpt.tensors)
        x = handle.to_f32(start, stop)
        handle.release(start, stop)
        return x.reshape(stop - start, -1)

    def n_rows(self, name: str) -> int:
        return self.by_gguf[name].hf_shape[0]

    def product_input(self, name: str, x: np.ndarray) -> np.ndarray:
        return x


def dequantize(raw: np.ndarray, qtype: T, n_rows: int, n_cols: int) -> np.ndarray:
    """uint8 rows of any GGUF tensor type -> float32 [n_rows, n_cols]; block types with llama.cpp's own
    dequantize_row_* kernels (bit-identical to gguf.quants, ten times faster), gguf.quants without them."""
    if qtype == T.F32:
        return raw.view("<f4").reshape(n_rows, n_cols).astype(np.float32)
    if qtype == T.F16:
        return f16_bits_to_f32(raw.view("<u2")).reshape(n_rows, n_cols)
    if qtype == T.BF16:
        return bf16_to_f32(raw.view("<u2")).reshape(n_rows, n_cols)
    if ggml_backend.available() and ggml_backend.can_dequantize(qtype):
        return ggml_backend.dequantize_rows(raw, qtype, n_cols)
    from gguf import quants

    with np.errstate(all="ignore"):
        return np.asarray(quants.dequantize(raw.reshape(n_rows, -1), qtype), dtype=np.float32).reshape(n_rows, n_cols)


class FileWeights:
    """A GGUF's tensors, dequantized when read."""

    def __init__(self, f: GGUFFile) -> None:
        self.f = f
        self.names = {t.name for t in f.tensors}

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def get(self, name: str) -> np.ndarray:
        info = self.f.tensor(name)
        return self.rows(name, 0, info.n_elements // info.shape[0]).reshape(info.np_shape)  # every row, 3-D too

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        info = self.f.tensor(name)
        n_cols = info.shape[0]
        raw = self.f.tensor_bytes(info)
        row_bytes = raw.size // (info.n_elements // n_cols)
        out = dequantize(raw[start * row_bytes : stop * row_bytes], info.tensor_type, stop - start, n_cols)
        self.f.release(info, start * row_bytes, stop * row_bytes)  # a fresh array: the mapped pages may go
        return out

    def n_rows(self, name: str) -> int:
        return self.f.tensor(name).np_shape[0]

    def product_input(self, name: str, x: np.ndarray) -> np.ndarray:
        """llama.cpp's CPU backend rounds activations before a product with quantized or 16-bit weights (to
        Q8_0 / Q8_1 / Q8_K, F16, BF16): the same rounding here leaves float summation order as the only
        difference."""
        qtype = self.f.tensor(name).tensor_type
        if qtype == T.F16:
            return x.astype(np.float16).astype(np.float32)
        if qtype == T.BF16:
            return bf16_to_f32(f32_to_bf16_bits(x)).reshape(x.shape)
        rounded = ggml_backend.round_activations(x, qtype) if qtype != T.F32 else None
        return x if rounded is None else rounded
