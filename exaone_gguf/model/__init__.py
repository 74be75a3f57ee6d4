"""The model itself: a float32 numpy reference forward pass, one readable file per family in forwards/ (each family
declares its forward by name: exaone_gguf.model.forwards.<name>) (in the spirit of nanoGPT's model.py), with what
runs on it: RoPE (rope.py), the source's independent forward (source.py), imatrix collection (imatrix.py), the
target-bpw sensitivity probe (sensitivity.py), and the built-in evaluation and calibration texts (texts.py).

Each forward takes its weights from a mapping by GGUF tensor name (weights.py) and the model's config:

    forward(checkpoint, token_ids)            the source: HF weights through the family's tensor table, the
                                              ground truth llama.cpp's logits on a file are compared against
    forward_file(gguf, spec, token_ids)       the file's own dequantized weights with the source config: what
                                              llama.cpp should compute on that file, rounding of weights aside

Weights are read layer by layer, so memory stays near one layer plus activations.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import numpy as np

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.errors import InputError
from exaone_gguf.families import Family, family_for
from exaone_gguf.gguf_io import GGUFFile
from exaone_gguf.model.weights import FileWeights, SourceWeights, Weights

__all__ = ["FileWeights", "SourceWeights", "forward", "forward_file", "forward_named", "forward_weights"]

Forward = Callable[..., np.ndarray]  # (weights, spec, token_ids, segments=None) -> logits


def forward_named(name: str) -> Forward:
    """The reference forward a family declares by name: the module exaone_gguf.model.forwards.<name>."""
    return importlib.import_module(f"{__name__}.forwards.{name}").forward


def forward_weights(
    fam: Family, weights: Weights, spec: ModelSpec, token_ids: list[int], segments: Sequence[int] | None = None
) -> np.ndarray:
    """Logits of `weights` (GGUF tensor names, as `fam` writes them) run with the config `spec`; `segments`:
    lengths of independent sequences laid end to end in token_ids (positions restart, attention stays inside)."""
    if not fam.reference:
        raise InputError(f"{spec.config_path}: no reference forward pass for model family {fam.name!r}.")
    return forward_named(fam.reference)(weights, spec, token_ids, segments=segments)


def forward(
    checkpoint: Checkpoint,
    token_ids: list[int],
    arch: str | None = None,
    routing: dict | None = None,
    segments: Sequence[int] | None = None,
) -> np.ndarray:
    """Logits float32 [len(token_ids), vocab] of the source; row i is the model's prediction for token i + 1.
    `arch`: the GGUF architecture to compute as (EXAONE 3.x as `llama`: same logits, permuted q/k).
    `routing`: a MoE forward fills it with layer -> (chosen experts [T, k], selection margin [T]).
    `segments`: lengths of independent sequences laid end to end in token_ids, run as one batch (the logits
    are those of each sequence run alone, up to float32 rounding)."""
    spec = checkpoint.spec
    fam = family_for(spec, arch)
    weights = SourceWeights(checkpoint, fam.tensor_map(spec))
    if routing is not None:
        weights.routing = routing
    return forward_weights(fam, weights, spec, token_ids, segments)


def forward_file(f: GGUFFile, spec: ModelSpec, token_ids: list[int], routes: dict | None = None) -> np.ndarray:
    """Logits of the GGUF's own (dequantized) weights run with the source config `spec`, computed as the
    file's architecture says (EXAONE 3.x written as `llama` runs the Llama forward on its permuted q/k); a file
    whose architecture the family cannot be written as runs as the family's own (the metadata check fails it).
    `routes`: a MoE forward uses these experts (layer -> [T, top_k] ids, llama.cpp's choice) instead of its own."""
    arch = f.get("general.architecture")
    try:
        fam = family_for(spec, arch)
    except InputError:
        fam = family_for(spec)
    weights = FileWeights(f)
    if routes is not None:
        weights.forced_routing = routes
    return forward_weights(fam, weights, spec, token_ids)
