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

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.convert.family import TensorMapping
from exaone_gguf.gguf_io import GGUFFile


class Weights(Protocol):
    def __contains__(self, name: str) -> bool: ...

    def get(self, name: str) -> np.ndarray:
        """The whole tensor, float32, numpy layout."""
        ...

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a 2-D tensor, float32 [stop - start, n_cols]."""
        ...

    def n_rows(self, name: str) -> int: ...


class SourceWeights:
    """A checkpoint seen under GGUF names through `mappings` (family_for(spec).tensor_map(spec))."""

    def __init__(self, ckpt: Checkpoint, mappings: list[TensorMapping]) -> None:
        self.ckpt = ckpt
        self.by_gguf = {m.gguf_name: m for m in mappings}

    def __contains__(self, name: str) -> bool:
        return name in self.by_gguf

    def get(self, name: str) -> np.ndarray:
        m = self.by_gguf[name]
        handle = self.ckpt.tensor(m.hf_name)
        x = handle.to_f32().reshape(m.hf_shape)
        handle.release()  # the mmap pages behind it are dropped right away
        return x if m.transform is None else m.transform(x)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        m = self.by_gguf[name]
        if m.transform is not None:  # a permutation works on whole row groups: read it all
            return self.get(name)[start:stop]
        handle = self.ckpt.tensor(m.hf_name)
        x = handle.to_f32(start, stop)
        handle.release(start, stop)
        return x.reshape(stop - start, -1)

    def n_rows(self, name: str) -> int:
        return self.by_gguf[name].hf_shape[0]


class FileWeights:
    """A GGUF's tensors, dequantized (gguf.quants) when read."""

    def __init__(self, f: GGUFFile) -> None:
        self.f = f
        self.names = {t.name for t in f.tensors}

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def get(self, name: str) -> np.ndarray:
        return self.f.tensor_f32(name)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self.f.rows_f32(name, start, stop)

    def n_rows(self, name: str) -> int:
        return self.f.tensor(name).np_shape[0]
