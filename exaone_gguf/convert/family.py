"""What a model family module provides, and the registry of families.

A family module is the only place that knows a family's tensor names and architecture keys; adding a family
means adding one module and one line in FAMILIES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.gguf_io.writer import GGUFPlan


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


@dataclass(frozen=True)
class TensorNames:
    """A family's HF tensor names (without `.weight`) for the GGUF tensor kinds it has; `layer` is in the
    order the GGUF lists a block's tensors. The shapes come from the config, the same for every family."""

    embed: str
    layer_prefix: str  # with {i} for the layer index
    layer: dict[str, str]  # GGUF kind (attn_q, ...) -> HF name after the prefix
    final_norm: str
    lm_head: str = "lm_head"

    def mappings(self, spec: ModelSpec) -> list[TensorMapping]:
        H, I, V, D = spec.hidden_size, spec.intermediate_size, spec.vocab_size, spec.head_dim
        q, kv = spec.num_heads * D, spec.num_kv_heads * D
        shape = {"attn_q": (q, H), "attn_k": (kv, H), "attn_v": (kv, H), "attn_output": (H, q),
                 "attn_q_norm": (D,), "attn_k_norm": (D,), "ffn_gate": (I, H), "ffn_up": (I, H), "ffn_down": (H, I),
                 "attn_norm": (H,), "ffn_norm": (H,), "post_attention_norm": (H,), "post_ffw_norm": (H,)}
        out = [TensorMapping("token_embd.weight", f"{self.embed}.weight", (V, H))]
        for i in range(spec.num_layers):
            hf = self.layer_prefix.format(i=i)
            out += [TensorMapping(f"blk.{i}.{kind}.weight", f"{hf}{name}.weight", shape[kind]) for kind, name in self.layer.items()]
        out.append(TensorMapping("output_norm.weight", f"{self.final_norm}.weight", (H,)))
        if not spec.tie_word_embeddings:
            out.append(TensorMapping("output.weight", f"{self.lm_head}.weight", (V, H)))
        return out


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


def add_llama_hparams(spec: ModelSpec, plan: GGUFPlan, arch: str) -> None:
    """The common keys and the head sizes of a Llama-shaped network (EXAONE 3.x as `exaone` or `llama`)."""
    add_common_hparams(spec, plan, arch)
    plan.add_u32(f"{arch}.rope.dimension_count", spec.head_dim)
    plan.add_u32(f"{arch}.attention.key_length", spec.head_dim)
    plan.add_u32(f"{arch}.attention.value_length", spec.head_dim)


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
