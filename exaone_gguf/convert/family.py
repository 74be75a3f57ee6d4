"""What a model family module provides, and the registry of families.

A family module is the only place that knows a family's tensor names and architecture keys; adding a family
means adding one module and one line in FAMILIES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.convert.writer import GGUFPlan


@dataclass(frozen=True)
class TensorMapping:
    gguf_name: str
    hf_name: str
    hf_shape: tuple[int, ...]  # what the config says the HF tensor must be ([out, in] for weights)
    # Optional row transform applied to float32 rows (e.g. Llama's q/k permutation); None = bytes as they are.
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    # The transform must see whole groups of this many rows (one attention head for the q/k permutation).
    row_group: int = 1


@dataclass(frozen=True)
class Family:
    name: str  # our family name (ModelSpec.family)
    arch: str  # GGUF general.architecture
    tensor_map: Callable[[ModelSpec], list[TensorMapping]]
    add_hparams: Callable[[ModelSpec, GGUFPlan], None]
    # HF tensors that carry nothing the GGUF needs (rotary caches); skipped instead of refused.
    ignorable: Callable[[str], bool] = lambda name: name.endswith(("rotary_emb.inv_freq", ".cos_cached", ".sin_cached"))


def add_common_hparams(spec: ModelSpec, plan: GGUFPlan, arch: str) -> None:
    """Keys every family writes; RMS epsilon always (llama.cpp's loaders require it)."""
    plan.add_u32(f"{arch}.context_length", spec.max_position_embeddings)
    plan.add_u32(f"{arch}.embedding_length", spec.hidden_size)
    plan.add_u32(f"{arch}.feed_forward_length", spec.intermediate_size)
    plan.add_u32(f"{arch}.block_count", spec.num_layers)
    plan.add_u32(f"{arch}.attention.head_count", spec.num_heads)
    plan.add_u32(f"{arch}.attention.head_count_kv", spec.num_kv_heads)
    plan.add_f32(f"{arch}.rope.freq_base", spec.rope_theta)
    plan.add_f32(f"{arch}.attention.layer_norm_rms_epsilon", spec.rms_eps)
    plan.add_u32(f"{arch}.vocab_size", spec.vocab_size)


def families() -> dict[str, Family]:
    from exaone_gguf.convert import exaone3, exaone4, llama

    return {f.name: f for f in (exaone3.FAMILY, exaone4.FAMILY, llama.FAMILY)}


def alternate_archs() -> dict[tuple[str, str], Family]:
    """(family, GGUF arch) -> a family module writing that family under another architecture."""
    from exaone_gguf.convert import llama

    return {("exaone", "llama"): llama.EXAONE_AS_LLAMA}


def family_for(spec: ModelSpec, arch: str | None = None) -> Family:
    """The family module for `spec`; `arch` asks for another GGUF architecture (EXAONE 3.x as `llama`)."""
    from exaone_gguf.errors import InputError

    fams = families()
    if arch is not None and spec.family in fams and arch != fams[spec.family].arch:
        alt = alternate_archs().get((spec.family, arch))
        if alt is None:
            raise InputError(
                f"{spec.config_path}: {spec.architecture} cannot be written as architecture {arch!r}; "
                f"leave --arch out (gives {fams[spec.family].arch!r})."
            )
        return alt
    if spec.family not in fams:
        raise InputError(
            f"{spec.config_path}: {spec.architecture} is recognised but cannot be converted yet; "
            f"supported: {', '.join(sorted(fams))}."
        )
    return fams[spec.family]
