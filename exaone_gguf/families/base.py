"""The registry's building blocks: tensor mappings, hyperparameters, chat formats, tiny recipes, the Family
record. Family modules import this module; exaone_gguf.families.registry lists the families."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from gguf import GGUFValueType, Keys

from exaone_gguf.checkpoint.spec import ConfigReading, ModelSpec, PreTokenizers
from exaone_gguf.families.sources import Sliced, Stacked

__all__ = [
    "BPE_PRE_TOKENIZERS",
    "Chat",
    "ChatFormat",
    "Family",
    "HParam",
    "Sliced",
    "Stacked",
    "TensorMapping",
    "TensorNames",
    "TinyRecipe",
    "TinyTokenizer",
    "common_hparams",
    "kind_shapes",
    "llama_hparams",
    "mtp_hparams",
    "mtp_mappings",
    "mtp_sources_dropped",
    "nextn_extras",
    "sliding_window_hparams",
    "with_mtp",
    "without_mtp",
]


# ---------------------------------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorMapping:
    """One GGUF tensor and where its rows come from.

    - one-to-one: `hf_name` as it is (the default);
    - copy: the same `hf_name` under several GGUF names (`TensorMapping.copies`), e.g. MTP blocks sharing layers;
    - stacked: `source=Stacked(names, part_shape)`, N source tensors -> one tensor [N, *part_shape];
    - slice: `source=Sliced(name, shape, axis, start, stop)`, one part of a fused source tensor.
    `hf_shape` is the GGUF tensor's shape in HF order (what the config implies); `hf_name` names the
    (first) source tensor for messages.
    """

    gguf_name: str
    hf_name: str
    hf_shape: tuple[int, ...]  # what the config says the tensor must be ([out, in] for weights)
    # Optional row transform applied to float32 rows (e.g. Llama's q/k permutation); None = bytes as they are.
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    # The transform must see whole groups of this many rows (one attention head for the q/k permutation).
    row_group: int = 1
    source: Stacked | Sliced | None = None  # None: the tensor `hf_name` itself

    def sources(self) -> dict[str, tuple[int, ...]]:
        """Every checkpoint tensor this mapping reads -> the shape the config implies for it."""
        return self.source.sources() if self.source is not None else {self.hf_name: self.hf_shape}

    def open(self, tensors: Mapping[str, Any]):
        """A lazy row source with the TensorHandle interface (shape, dtype, n_rows, row_numel, to_f32, raw,
        release): the checkpoint handle itself, or a view over several handles that reads only the rows asked."""
        return self.source.open(tensors) if self.source is not None else tensors[self.hf_name]

    @staticmethod
    def copies(gguf_names: list[str], hf_name: str, hf_shape: tuple[int, ...]) -> list["TensorMapping"]:
        """One source tensor written under several GGUF names (each streamed from the same lazy handle)."""
        return [TensorMapping(g, hf_name, hf_shape) for g in gguf_names]

    @staticmethod
    def stacked(gguf_name: str, hf_names: list[str], part_shape: tuple[int, ...]) -> "TensorMapping":
        """N source tensors of `part_shape` -> one GGUF tensor [N, *part_shape] (experts), served expert by expert."""
        src = Stacked(tuple(hf_names), tuple(part_shape))
        return TensorMapping(gguf_name, hf_names[0], src.shape, source=src)

    @staticmethod
    def sliced(
        gguf_name: str, hf_name: str, shape: tuple[int, ...], axis: int, start: int, stop: int
    ) -> "TensorMapping":
        """Indices [start, stop) along `axis` of the source tensor `hf_name` of `shape` (a fused gate_up split)."""
        src = Sliced(hf_name, tuple(shape), axis, start, stop)
        return TensorMapping(gguf_name, hf_name, src.shape, source=src)


# GGUF tensor kinds -> the shape the config implies (HF order), for the kinds every family here has.
def kind_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    H, I, D = spec.hidden_size, spec.intermediate_size, spec.head_dim
    q, kv = spec.num_heads * D, spec.num_kv_heads * D
    return {
        "attn_q": (q, H),
        "attn_k": (kv, H),
        "attn_v": (kv, H),
        "attn_output": (H, q),
        "attn_q_norm": (D,),
        "attn_k_norm": (D,),
        "ffn_gate": (I, H),
        "ffn_up": (I, H),
        "ffn_down": (H, I),
        "attn_norm": (H,),
        "ffn_norm": (H,),
        "post_attention_norm": (H,),
        "post_ffw_norm": (H,),
    }


@dataclass(frozen=True)
class TensorNames:
    """A family's HF tensor names (without `.weight`) for the GGUF tensor kinds it has; `layer` is in the
    order the GGUF lists a block's tensors. `prefix` (e.g. `model.` or `model.language_model.`) goes before
    the embedding, layer and final-norm names; the shapes come from the config, the same for every family."""

    embed: str
    layer_prefix: str  # with {i} for the layer index
    layer: dict[str, str]  # GGUF kind (attn_q, ...) -> HF name after the prefix
    final_norm: str
    lm_head: str = "lm_head"
    prefix: str = ""

    def block(self, spec: ModelSpec, bid: int, hf: str) -> list[TensorMapping]:
        """GGUF block `bid` read from the HF layer whose names start with `hf` (an MTP layer's `mtp.layers.K.`)."""
        shape = kind_shapes(spec)
        return [
            TensorMapping(f"blk.{bid}.{kind}.weight", f"{hf}{name}.weight", shape[kind])
            for kind, name in self.layer.items()
        ]

    def mappings(self, spec: ModelSpec, mtp: bool = False) -> list[TensorMapping]:
        """`mtp`: the family maps `spec.extras["nextn"]` MTP blocks after the last layer (mtp_mappings)."""
        V, H, p = spec.vocab_size, spec.hidden_size, self.prefix
        out = [TensorMapping("token_embd.weight", f"{p}{self.embed}.weight", (V, H))]
        for i in range(spec.num_layers):
            out += self.block(spec, i, p + self.layer_prefix.format(i=i))
        if mtp:
            out += mtp_mappings(spec, lambda bid, hf: self.block(spec, bid, hf))
        out.append(TensorMapping("output_norm.weight", f"{p}{self.final_norm}.weight", (H,)))
        if not spec.tie_word_embeddings:
            out.append(TensorMapping("output.weight", f"{self.lm_head}.weight", (V, H)))
        return out


# ---- MTP (multi-token prediction) blocks, as llama.cpp's converter maps them (conversion/exaone.py:
# ExaoneMoEModel, Exaone4_5_TextModel): `mtp.layers.K.*` -> block num_hidden_layers + K, and the shared
# `mtp.fc` / `mtp.pre_fc_norm_*` / `mtp.norm` copied into every MTP block as `nextn.*`. llama.cpp keeps
# these blocks in the file and never runs them.

_NEXTN = (  # GGUF kind, HF name, shape in units of hidden_size
    ("nextn.eh_proj.weight", "mtp.fc.weight", (1, 2)),
    ("nextn.enorm.weight", "mtp.pre_fc_norm_embedding.weight", (1,)),
    ("nextn.hnorm.weight", "mtp.pre_fc_norm_hidden.weight", (1,)),
    ("nextn.shared_head_norm.weight", "mtp.norm.weight", (1,)),
)


def nextn_extras(k) -> dict[str, Any]:
    """The MTP keys of a config (a ConfigKeys): how many blocks, and whether they share one layer's weights."""
    return {
        "nextn": k.int("num_nextn_predict_layers", default=0, positive=False),
        "mtp_share": k.bool("mtp_share_layers", False),
    }


def mtp_mappings(spec: ModelSpec, block: Callable[[int, str], list[TensorMapping]]) -> list[TensorMapping]:
    """The MTP blocks after the last layer: `block(bid, hf_prefix)` gives one block's tensors (the family's
    layer layout); with `mtp_share_layers` every block reads `mtp.layers.0.`. Then the shared nextn tensors."""
    L, H, n = spec.num_layers, spec.hidden_size, spec.extras.get("nextn", 0)
    share = spec.extras.get("mtp_share", False)
    out: list[TensorMapping] = []
    for k in range(n):
        out += block(L + k, f"mtp.layers.{0 if share else k}.")
    for kind, hf, units in _NEXTN if n else ():
        out += TensorMapping.copies([f"blk.{b}.{kind}" for b in range(L, L + n)], hf, tuple(u * H for u in units))
    return out


def without_mtp(spec: ModelSpec) -> ModelSpec:
    """`spec` for a file without the MTP blocks (`convert --no-mtp`): no blocks after the last layer, block_count
    num_hidden_layers, nextn_predict_layers 0 where the family writes it; `mtp_dropped` remembers how many the
    checkpoint has (their tensors are left out, mtp_sources_dropped). A spec without MTP blocks is returned as is."""
    n = spec.extras.get("nextn", 0)
    return dataclasses.replace(spec, extras={**spec.extras, "nextn": 0, "mtp_dropped": n}) if n else spec


def with_mtp(spec: ModelSpec) -> ModelSpec:
    """The spec without_mtp was given (`spec` itself when it dropped nothing)."""
    n = spec.extras.get("mtp_dropped", 0)
    return dataclasses.replace(spec, extras={**spec.extras, "nextn": n, "mtp_dropped": 0}) if n else spec


def mtp_sources_dropped(fam: "Family", spec: ModelSpec) -> set[str]:
    """The checkpoint tensors of the MTP blocks without_mtp dropped (none when it dropped nothing)."""
    full = with_mtp(spec)
    if full is spec:
        return set()
    kept = {s for m in fam.tensor_map(spec) for s in m.sources()}
    return {s for m in fam.tensor_map(full) for s in m.sources()} - kept


def mtp_hparams(hparams: list[HParam], spec: ModelSpec, arch: str, always: bool = False) -> list[HParam]:
    """`hparams` with block_count counting the MTP blocks, and `{arch}.nextn_predict_layers` when there are
    any (`always`: also 0, as llama.cpp writes it for exaone-moe)."""
    n = spec.extras.get("nextn", 0)
    key = Keys.LLM.BLOCK_COUNT.format(arch=arch)
    out = [u32(Keys.LLM.BLOCK_COUNT, arch, spec.num_layers + n) if h[0] == key else h for h in hparams]
    return out + ([u32(Keys.LLM.NEXTN_PREDICT_LAYERS, arch, n)] if n or always else [])


# llama.cpp's `tokenizer.ggml.pre` names for byte-level BPE vocabularies: digits split one by one (EXAONE 3.x)
# or the GPT-2 regex (EXAONE 4, and any byte-level BPE checkpoint of the other families).
BPE_PRE_TOKENIZERS = PreTokenizers(split_digits="exaone", gpt2_regex="exaone4")


# ------------------------------------------------------------------------------------------ hyperparameters

HParam = tuple[str, GGUFValueType, Any, "GGUFValueType | None"]  # key, type, value, array element type


def u32(key: str, arch: str, value: int) -> HParam:
    return (key.format(arch=arch), GGUFValueType.UINT32, int(value), None)


def f32(key: str, arch: str, value: float) -> HParam:
    return (key.format(arch=arch), GGUFValueType.FLOAT32, float(value), None)


def sliding_window_hparams(spec: ModelSpec, arch: str) -> list[HParam]:
    """The window and the per-layer pattern over the num_hidden_layers layers (MTP blocks never run);
    nothing for a model without a sliding window."""
    if spec.sliding_window is None:
        return []
    pattern = [spec.is_sliding(i) for i in range(spec.num_layers)]
    return [
        u32(Keys.Attention.SLIDING_WINDOW, arch, spec.sliding_window),
        (Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=arch), GGUFValueType.ARRAY, pattern, GGUFValueType.BOOL),
    ]


def common_hparams(spec: ModelSpec, arch: str) -> list[HParam]:
    """Keys every family writes; RMS epsilon always (llama.cpp's loaders require it)."""
    return [
        u32(Keys.LLM.CONTEXT_LENGTH, arch, spec.max_position_embeddings),
        u32(Keys.LLM.EMBEDDING_LENGTH, arch, spec.hidden_size),
        u32(Keys.LLM.FEED_FORWARD_LENGTH, arch, spec.intermediate_size),
        u32(Keys.LLM.BLOCK_COUNT, arch, spec.num_layers),
        u32(Keys.Attention.HEAD_COUNT, arch, spec.num_heads),
        u32(Keys.Attention.HEAD_COUNT_KV, arch, spec.num_kv_heads),
        f32(Keys.Rope.FREQ_BASE, arch, spec.rope_theta),
        f32(Keys.Attention.LAYERNORM_RMS_EPS, arch, spec.rms_eps),
        u32(Keys.LLM.VOCAB_SIZE, arch, spec.vocab_size),
    ]


def llama_hparams(spec: ModelSpec, arch: str) -> list[HParam]:
    """The common keys and the head sizes of a Llama-shaped network (EXAONE 3.x as `exaone` or `llama`)."""
    return common_hparams(spec, arch) + [
        u32(Keys.Rope.DIMENSION_COUNT, arch, spec.head_dim),
        u32(Keys.Attention.KEY_LENGTH, arch, spec.head_dim),
        u32(Keys.Attention.VALUE_LENGTH, arch, spec.head_dim),
    ]


# ------------------------------------------------------------------------------------------------------ chat


@dataclass(frozen=True)
class ChatFormat:
    """One chat prompt format: what a Modelfile and the model card say for it."""

    name: str  # what publish's Modelfile / card key on
    go_template: str  # Ollama TEMPLATE (Go text/template), the same prompt as the Jinja template
    params: tuple[tuple[str, str], ...]  # PARAMETER lines
    system: str | None  # default SYSTEM or None
    comment: str  # the Modelfile's explanatory comment
    stop: str  # PARAMETER stop
    card_note: str | None = None  # a paragraph for the card's usage section
    when: str | None = None  # chosen within its family when this marker is in the template (None: default)


@dataclass(frozen=True)
class Chat:
    """A family's chat templates: how to recognise them and which formats they come in."""

    name: str  # validate/template_check's format name
    formats: tuple[ChatFormat, ...]  # the first whose `when` marker is in the template; the last is the default
    requires: tuple[str, ...]  # markers all present -> a template of this family (llama.cpp's detection order)
    excludes: tuple[str, ...] = ()  # ... and none of these
    features: frozenset[str] = frozenset()  # what validate's test conversations may exercise
    claims_marker: str | None = None  # a template with this marker is this family's under any GGUF arch

    def pick(self, template: str | None) -> ChatFormat:
        for f in self.formats:
            if f.when is None or (template and f.when in template):
                return f
        return self.formats[-1]

    def recognises(self, template: str) -> bool:
        return all(m in template for m in self.requires) and not any(m in template for m in self.excludes)


# ------------------------------------------------------------------------------------------------------ tiny


@dataclass(frozen=True)
class TinyRecipe:
    """A make-tiny family name: a config builder with tiny sizes and the chat template its tokenizer ships."""

    name: str
    config: Callable[[], dict[str, Any]]
    chat_template: str | None = None  # None: the family's tokenizer writer brings its own
    awq: bool = False  # quantize the float model's linear layers with AutoAWQ's layout
    demo: bool = False  # among `demo`'s default families
    # the spec adjusted for a layout the config cannot say (K-EXAONE's fused experts); None: as parsed
    layout: Callable[[ModelSpec], ModelSpec] | None = None


@dataclass(frozen=True)
class TinyTokenizer:
    """How make-tiny writes a family's tokenizer."""

    sentencepiece: bool = False  # a trained SentencePiece model (Llama) instead of byte-level BPE
    split_digits: bool = False
    template_in_jinja: bool = False  # chat_template.jinja instead of tokenizer_config.json's chat_template
    default_template: str | None = None  # the recipe whose template a --from-config model gets
    scale_residual: bool = True  # scale sublayer outputs by 1/sqrt(2L) (not with EXAONE 4's post-norms)
    writer: str | None = None  # a module exaone_gguf.tiny.<writer>: write_tokenizer(out, template, this) writes it
    # what a writer needs of the family: its end-of-turn token, pre-tokenizer regex, and extra files (name -> JSON)
    eot: str | None = None
    pre_regex: str | None = None
    files: tuple[tuple[str, Any], ...] = ()


# ----------------------------------------------------------------------------------------------- config keys
# Every config key is one of: read (the family writes what it says into the GGUF, or refuses a value it cannot
# write), harmless (training, Hugging Face loading or serving settings: the network computes the same), known to
# change the computation (refused where the family does not read it), or unknown (a warning lists it).

# Read by checkpoint.spec.parse_config for every family (besides its ConfigReading's layer, activation and epsilon
# keys), or by the checkpoint layer (a quantized source's block: read, or refused with its own sentence).
COMMON_READS = frozenset(
    {
        "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
        "num_key_value_heads", "head_dim", "rope_theta", "rope_scaling", "rope_parameters", "max_position_embeddings",
        "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype",
        "quantization_config", "quantization",
    }
)  # fmt: skip

# transformers' PretrainedConfig attributes and the training-only fields of the EXAONE and Llama config classes.
COMMON_HARMLESS = frozenset(
    {
        "_name_or_path", "transformers_version", "use_cache", "initializer_range", "attention_dropout",
        "embed_dropout", "resid_dropout", "hidden_dropout", "dropout", "auto_map", "tokenizer_class", "pretraining_tp",
        "output_attentions", "output_hidden_states", "return_dict", "torchscript", "pruned_heads", "use_bfloat16",
        "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "add_cross_attention", "tie_encoder_decoder",
        "cross_attention_hidden_size", "id2label", "label2id", "problem_type", "task_specific_params",
        "finetuning_task", "prefix", "sep_token_id", "decoder_start_token_id", "tf_legacy_loss", "gradient_checkpointing",
        "_attn_implementation", "_attn_implementation_autoset", "attn_implementation", "keys_to_ignore_at_inference",
        # generation defaults some old configs carry (generation_config.json's keys)
        "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
        "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
        "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
        "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    }
)  # fmt: skip

# Keys that change the computation in some network, none of whose graphs llama.cpp runs for these families (every
# family's own reads are added: EXAONE 4's sliding window in an EXAONE 3 config is refused too), with what they do.
COMPUTATION_KEYS: dict[str, str] = {
    "swiglu_limits": "a clamp of the SwiGLU inputs per layer",
    "sliding_windows": "a sliding-window size per layer",
    "attention_bias": "biases on the attention projections",
    "mlp_bias": "biases on the MLP projections",
    "partial_rotary_factor": "rotary embeddings on part of each head",
    "rotary_pct": "rotary embeddings on part of each head",
    "attn_logit_softcapping": "a soft cap on attention logits",
    "final_logit_softcapping": "a soft cap on output logits",
    "query_pre_attn_scalar": "another attention scale",
    "logits_scaling": "a scale on the output logits",
    "embedding_multiplier": "a scale on the embeddings",
    "residual_multiplier": "a scale on the residual branches",
    "attention_multiplier": "another attention scale",
    "no_rope_layers": "layers without rotary embeddings",
    "use_logit_cap": "a soft cap on logits",
    "use_emb_norm": "a norm after the embedding",
    "ln_no_scale": "norms without a weight",
    "use_sliding_window": "a sliding window",
    "max_window_layers": "a sliding window on some layers",
    "mlp_only_layers": "dense layers among MoE ones",
    "decoder_sparse_step": "MoE layers at a stride",
}


# ---------------------------------------------------------------------------------------------------- family


def _ignorable(name: str) -> bool:
    return name.endswith(("rotary_emb.inv_freq", ".cos_cached", ".sin_cached"))


@dataclass(frozen=True)
class Family:
    name: str  # ModelSpec.family
    arch: str  # GGUF general.architecture
    tensor_map: Callable[[ModelSpec], list[TensorMapping]]
    hparams: Callable[[ModelSpec], list[HParam]]
    architectures: tuple[str, ...] = ()  # HF architecture names claimed (every spelling)
    config: ConfigReading | None = None
    reference: str | None = None  # the reference forward's name (exaone_gguf.model.forwards)
    chat: Chat | None = None
    vocab_model: str | None = None  # tokenizer.ggml.model a GGUF of this family must have
    hybrid_layers: int | None = None  # llama.cpp runs sliding-window attention only at this block count
    tiny: tuple[TinyRecipe, ...] = ()
    tiny_tokenizer: TinyTokenizer = TinyTokenizer()
    # HF tensors that carry nothing the GGUF needs (rotary caches); skipped instead of refused.
    ignorable: Callable[[str], bool] = _ignorable
    # Source tensors that belong to another file (EXAONE 4.5's vision tower, written to the mmproj): name ->
    # the shape the config implies. The text file never carries them; make-tiny writes them.
    left_out: Callable[[ModelSpec], dict[str, tuple[int, ...]]] | None = None
    # The vision tower's tensors (names below its prefix) -> shapes, from a vision config's sizes (attributes as in
    # vision.config.VisionSpec): the projector converter's table (exaone_gguf.vision).
    vision_tower: Callable[[Any], dict[str, tuple[int, ...]]] | None = None
    # config.json keys (check_config_keys): those the family reads besides COMMON_READS and its ConfigReading's
    # layer / activation / epsilon keys, and those that do not change its computation besides COMMON_HARMLESS.
    reads: frozenset[str] = frozenset()
    harmless: frozenset[str] = frozenset()
    nextn_always: bool = False  # {arch}.nextn_predict_layers written also when 0 (llama.cpp's exaone-moe converter)

    def add_hparams(self, spec: ModelSpec, plan) -> None:
        """Add the hyperparameter keys to a GGUF plan (anything with `add(key, type, value, sub)`)."""
        for key, vtype, value, sub in self.hparams(spec):
            plan.add(key, vtype, value, sub)

    @property
    def pre_tokenizers(self) -> tuple[str, ...]:
        p = self.config.pre_tokenizers if self.config else None
        return (p.split_digits, p.gpt2_regex) if p else ()
