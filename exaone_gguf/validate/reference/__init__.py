"""Float32 numpy reference forward pass, one readable file per family (in the spirit of nanoGPT's model.py).

`forward(checkpoint, token_ids)` returns logits [T, vocab] computed straight from the HF weights, the
ground truth that GGUF logits from llama.cpp are compared against. Weights are read layer by layer
through the checkpoint's lazy handles, so memory stays near one layer plus activations.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.errors import InputError
from exaone_gguf.validate.reference import exaone3, exaone4, llama

__all__ = ["FORWARDS", "forward"]

FORWARDS: dict[str, Callable[[Checkpoint, list[int]], np.ndarray]] = {
    "exaone": exaone3.forward,
    "exaone4": exaone4.forward,
    "llama": llama.forward,
}


def forward(checkpoint: Checkpoint, token_ids: list[int]) -> np.ndarray:
    """Logits float32 [len(token_ids), vocab]; row i is the model's prediction for token i + 1."""
    family = checkpoint.spec.family
    if family not in FORWARDS:
        raise InputError(f"{checkpoint.path}: no reference forward pass for model family {family!r}.")
    return FORWARDS[family](checkpoint, token_ids)
