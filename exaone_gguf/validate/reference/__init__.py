"""Float32 numpy reference forward pass, one readable file per family (in the spirit of nanoGPT's model.py).

`forward(checkpoint, token_ids)` returns logits [T, vocab] computed straight from the HF weights, the
ground truth that GGUF logits from llama.cpp are compared against. Weights are read layer by layer
through the checkpoint's lazy handles, so memory stays near one layer plus activations.
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.errors import InputError
from exaone_gguf.families import families

__all__ = ["FORWARDS", "forward", "forward_named"]

Forward = Callable[[Checkpoint, list[int]], np.ndarray]


def forward_named(name: str) -> Forward:
    """The reference forward a family declares by name: the module exaone_gguf.validate.reference.<name>."""
    return importlib.import_module(f"{__name__}.{name}").forward


# family name -> its reference forward (families that declare one)
FORWARDS: dict[str, Forward] = {n: forward_named(f.reference) for n, f in families().items() if f.reference}


def forward(checkpoint: Checkpoint, token_ids: list[int]) -> np.ndarray:
    """Logits float32 [len(token_ids), vocab]; row i is the model's prediction for token i + 1."""
    family = checkpoint.spec.family
    if family not in FORWARDS:
        raise InputError(f"{checkpoint.path}: no reference forward pass for model family {family!r}.")
    return FORWARDS[family](checkpoint, token_ids)
