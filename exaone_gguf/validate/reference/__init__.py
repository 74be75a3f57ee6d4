"""Float32 numpy reference forward pass, one readable file per GGUF architecture (in the spirit of nanoGPT's
model.py).

Each forward takes its weights from a mapping by GGUF tensor name (weights.py) and the model's config:

    forward(checkpoint, token_ids)            the source: HF weights through the family's tensor table, the
                                              ground truth llama.cpp's logits on a file are compared against
    forward_file(gguf, spec, token_ids)       the file's own dequantized weights with the source config: what
                                              llama.cpp should compute on that file, rounding of weights aside

Weights are read layer by layer, so memory stays near one layer plus activations.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io import GGUFFile
from exaone_gguf.validate.reference import exaone3, exaone4, llama
from exaone_gguf.validate.reference.weights import FileWeights, SourceWeights, Weights

__all__ = ["FORWARDS", "FileWeights", "SourceWeights", "forward", "forward_file", "forward_weights"]

# GGUF architecture -> forward(weights, spec, token_ids)
FORWARDS: dict[str, Callable[[Weights, ModelSpec, list[int]], np.ndarray]] = {
    "exaone": exaone3.forward,
    "exaone4": exaone4.forward,
    "llama": llama.forward,
}


def forward_weights(arch: str, weights: Weights, spec: ModelSpec, token_ids: list[int]) -> np.ndarray:
    if arch not in FORWARDS:
        raise InputError(f"{spec.config_path}: no reference forward pass for GGUF architecture {arch!r}.")
    return FORWARDS[arch](weights, spec, token_ids)


def forward(checkpoint: Checkpoint, token_ids: list[int], arch: str | None = None) -> np.ndarray:
    """Logits float32 [len(token_ids), vocab] of the source; row i is the model's prediction for token i + 1.
    `arch`: the GGUF architecture to compute as (EXAONE 3.x as `llama`: same logits, permuted q/k)."""
    from exaone_gguf.convert.family import family_for

    spec = checkpoint.spec
    try:
        fam = family_for(spec, arch)
    except InputError:
        raise InputError(f"{checkpoint.path}: no reference forward pass for model family {spec.family!r}.") from None
    return forward_weights(fam.arch, SourceWeights(checkpoint, fam.tensor_map(spec)), spec, token_ids)


def forward_file(f: GGUFFile, spec: ModelSpec, token_ids: list[int]) -> np.ndarray:
    """Logits of the GGUF's own (dequantized) weights run with the source config `spec`."""
    return forward_weights(f.get("general.architecture"), FileWeights(f), spec, token_ids)
