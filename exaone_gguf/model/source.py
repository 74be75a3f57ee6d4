"""The source's own forward: a Hugging Face checkpoint read by its own tensor names and config.json keys.

Written from transformers' modeling code (modeling_llama / exaone4 / exaone_moe / exaone4_5, and EXAONE 3.x's
remote modeling_exaone.py, which is Llama's computation under GPT-2-style names), never through the converter's
tensor table or a family's hparams: a wrong table entry (gate and up swapped, q permuted twice) makes a file
whose logits differ from these. The import-linter contract `source forward is independent` (pyproject.toml)
keeps exaone_gguf.families and exaone_gguf.convert out of this module's imports.

    forward_source(checkpoint_dir_or_checkpoint, token_ids)   -> float32 logits [T, vocab]

One short forward per HF architecture, numpy float32, weights read layer by layer (HF layout [out, in]):

    LlamaForCausalLM, ExaoneForCausalLM   x = input_layernorm(h); h += o(attn(rope(q(x)), rope(k(x)), v(x)))
                                          x = post_attention_layernorm(h); h += down(silu(gate(x)) * up(x))
    Exaone4ForCausalLM (and the text      q, k = q_norm(q(h)), k_norm(k(h)) per head; RoPE where sliding_window
    model of Exaone4_5_...Generation)     is None or the layer slides (global layers of a hybrid are NoPE)
                                          h += post_attention_layernorm(o(attn(...)))
                                          h += post_feedforward_layernorm(down(silu(gate(h)) * up(h)))
    ExaoneMoeForCausalLM (K-EXAONE)       pre-norm as Llama, q/k norms and RoPE as EXAONE 4; sparse layers:
                                          sigmoid router + e_score_correction_bias for the choice, group-limited
                                          top-k, weights renormalised and scaled, plus the shared experts
    all                                   logits = lm_head(norm(h)), lm_head = embed_tokens when tied
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from exaone_gguf.checkpoint import Checkpoint, load_tensors
from exaone_gguf.checkpoint.spec import read_config
from exaone_gguf.errors import InputError
from exaone_gguf.model.ops import (
    LOGIT_CHUNK_ROWS,
    apply_rope,
    attention,
    rmsnorm,
    rope_tables,
    silu,
)


class Config:
    """config.json as transformers reads it for one architecture (its config class's defaults for absent keys)."""

    def __init__(self, cfg: dict, path: Path) -> None:
        self.arch = (cfg.get("architectures") or [None])[0]
        if self.arch == "Exaone4_5_ForConditionalGeneration":
            cfg = {**cfg, **cfg.get("text_config", {})}
        self.cfg, self.path = cfg, path
        exaone3 = self.arch == "ExaoneForCausalLM"
        self.n_layers = cfg["num_layers"] if exaone3 else cfg["num_hidden_layers"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-5) if exaone3 else cfg.get("rms_norm_eps", 1e-6)
        self.hidden = cfg["hidden_size"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads") or self.n_heads
        self.head_dim = cfg.get("head_dim") or self.hidden // self.n_heads
        self.vocab = cfg["vocab_size"]
        # ExaoneConfig keeps PretrainedConfig's default (tied); Llama / Exaone4 / ExaoneMoe / Exaone4_5 set untied
        self.tied = cfg.get("tie_word_embeddings", exaone3)
        exaone4 = self.arch not in ("ExaoneForCausalLM", "LlamaForCausalLM")
        self.window = cfg.get("sliding_window", 4096) if exaone4 else None
        self.layer_types = self._layer_types(cfg.get("layer_types"), cfg.get("sliding_window_pattern", 4))

    def _layer_types(self, types: list | None, pattern) -> list[str]:
        if self.window is None:
            return ["full_attention"] * self.n_layers
        if types is not None:
            return list(types)
        if isinstance(pattern, str):  # "LLLG": L slides, G is global, repeating from layer 0
            return [
                "sliding_attention" if pattern[i % len(pattern)] == "L" else "full_attention"
                for i in range(self.n_layers)
            ]
        return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(self.n_layers)]

    def sliding(self, i: int) -> bool:
        return self.window is not None and self.layer_types[i] == "sliding_attention"

    def inv_freq(self) -> np.ndarray:
        """transformers' ROPE_INIT_FUNCTIONS for `default` and `llama3` (rope_parameters in transformers 5,
        rope_theta + rope_scaling before), in float64."""
        rp = self.cfg.get("rope_parameters") or self.cfg.get("rope_scaling") or {}
        kind = rp.get("rope_type", rp.get("type", "default"))
        theta = rp.get("rope_theta", self.cfg.get("rope_theta", 10000.0))
        d = self.head_dim
        inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
        if kind == "default":
            return inv
        if kind != "llama3":
            raise InputError(f"{self.path}: the source forward knows RoPE types default and llama3, not {kind!r}.")
        factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        old = rp["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        return np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


class Tensors:
    """The checkpoint's tensors by HF name, float32 in HF layout, read when asked for (`prefix` + name)."""

    def __init__(self, handles: dict, prefix: str = "") -> None:
        self.handles, self.prefix = handles, prefix

    def __contains__(self, name: str) -> bool:
        return self.prefix + name in self.handles

    def handle(self, name: str):
        try:
            return self.handles[self.prefix + name]
        except KeyError:
            raise InputError(f"source forward: tensor {self.prefix + name!r} is missing from the checkpoint.") from None

    def __call__(self, name: str) -> np.ndarray:
        h = self.handle(name)
        x = h.to_f32().reshape(h.shape)
        h.release()
        return x

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        h = self.handle(name)
        x = h.to_f32(start, stop).reshape(-1, h.shape[1])
        h.release(start, stop)
        return x

    def linear(self, name: str, x: np.ndarray) -> np.ndarray:
        """x @ W.T (+ b): `name` is the module (…q_proj), its `.weight` and optional `.bias` are read."""
        y = x @ self(name + ".weight").T
        return y + self(name + ".bias") if name + ".bias" in self else y


def mlp(w: Tensors, p: str, x: np.ndarray, gate: str = "gate_proj", up: str = "up_proj", down: str = "down_proj"):
    return w.linear(p + down, silu(w.linear(p + gate, x)) * w.linear(p + up, x))


def embed_and_head(w: Tensors, c: Config, embed: str, ids: np.ndarray) -> tuple[np.ndarray, Callable]:
    """The embedding rows of `ids`, and the output head (lm_head, or the embeddings when tied) in row chunks."""
    rows = {int(i): w.rows(embed, int(i), int(i) + 1)[0] for i in np.unique(ids)}
    h = np.stack([rows[int(i)] for i in ids])
    head, tensors = (embed, w) if c.tied else ("lm_head.weight", Tensors(w.handles))  # lm_head: outside the prefix

    def logits(x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), c.vocab), dtype=np.float32)
        for s in range(0, c.vocab, LOGIT_CHUNK_ROWS):
            e = min(s + LOGIT_CHUNK_ROWS, c.vocab)
            out[:, s:e] = x @ tensors.rows(head, s, e).T
        return out

    return h, logits


def heads(x: np.ndarray, n: int, d: int) -> np.ndarray:
    return x.reshape(len(x), n, d)


def llama(c: Config, w: Tensors, ids: np.ndarray, cos, sin, segments) -> np.ndarray:
    """LlamaForCausalLM; ExaoneForCausalLM is the same network under the names of its remote code."""
    if c.arch == "ExaoneForCausalLM":
        n = dict(embed="transformer.wte.weight", layer="transformer.h.{}.", ln1="ln_1", ln2="ln_2", q="attn.attention.q_proj",
                 k="attn.attention.k_proj", v="attn.attention.v_proj", o="attn.attention.out_proj", gate="mlp.c_fc_0",
                 up="mlp.c_fc_1", down="mlp.c_proj", norm="transformer.ln_f.weight")  # fmt: skip
    else:
        n = dict(embed="model.embed_tokens.weight", layer="model.layers.{}.", ln1="input_layernorm", ln2="post_attention_layernorm",
                 q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj", gate="mlp.gate_proj",
                 up="mlp.up_proj", down="mlp.down_proj", norm="model.norm.weight")  # fmt: skip
    h, logits = embed_and_head(w, c, n["embed"], ids)
    for i in range(c.n_layers):
        p = n["layer"].format(i)
        x = rmsnorm(h, w(p + n["ln1"] + ".weight"), c.eps)
        q = apply_rope(heads(w.linear(p + n["q"], x), c.n_heads, c.head_dim), cos, sin)
        k = apply_rope(heads(w.linear(p + n["k"], x), c.n_kv, c.head_dim), cos, sin)
        v = heads(w.linear(p + n["v"], x), c.n_kv, c.head_dim)
        h = h + w.linear(p + n["o"], attention(q, k, v, None, segments))
        x = rmsnorm(h, w(p + n["ln2"] + ".weight"), c.eps)
        h = h + mlp(w, p, x, n["gate"], n["up"], n["down"])
    return logits(rmsnorm(h, w(n["norm"]), c.eps))


def attention_qk_norm(c: Config, w: Tensors, p: str, i: int, x: np.ndarray, cos, sin, segments) -> np.ndarray:
    """EXAONE 4 / K-EXAONE self-attention: per-head q/k RMSNorm, then RoPE unless the layer is a hybrid's global
    layer (transformers: `if self.sliding_window is None or self.is_sliding`), the window on sliding layers."""
    q = rmsnorm(
        heads(w.linear(p + "self_attn.q_proj", x), c.n_heads, c.head_dim), w(p + "self_attn.q_norm.weight"), c.eps
    )
    k = rmsnorm(heads(w.linear(p + "self_attn.k_proj", x), c.n_kv, c.head_dim), w(p + "self_attn.k_norm.weight"), c.eps)
    v = heads(w.linear(p + "self_attn.v_proj", x), c.n_kv, c.head_dim)
    if c.window is None or c.sliding(i):
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    return w.linear(p + "self_attn.o_proj", attention(q, k, v, c.window if c.sliding(i) else None, segments))


def exaone4(c: Config, w: Tensors, ids: np.ndarray, cos, sin, segments) -> np.ndarray:
    """Exaone4ForCausalLM, and the language model of Exaone4_5_ForConditionalGeneration (`model.language_model.`)."""
    h, logits = embed_and_head(w, c, "embed_tokens.weight", ids)
    for i in range(c.n_layers):
        p = f"layers.{i}."
        h = h + rmsnorm(
            attention_qk_norm(c, w, p, i, h, cos, sin, segments), w(p + "post_attention_layernorm.weight"), c.eps
        )
        h = h + rmsnorm(mlp(w, p + "mlp.", h), w(p + "post_feedforward_layernorm.weight"), c.eps)
    return logits(rmsnorm(h, w("norm.weight"), c.eps))


def sparse_moe(c: Config, w: Tensors, p: str, x: np.ndarray, forced: np.ndarray | None = None) -> np.ndarray:
    """ExaoneMoeSparseMoEBlock: ExaoneMoeTopkRouter's choice (or the `forced` experts [T, top_k], weighted by this
    router's scores), each chosen expert on its tokens, + shared experts."""
    cfg = c.cfg
    n_exp, top_k = cfg.get("num_experts", 64), cfg.get("num_experts_per_tok", 8)
    n_group, k_group = cfg.get("n_group", 1), cfg.get("topk_group", 1)
    scores = 1.0 / (1.0 + np.exp(-(x @ w(p + "gate.weight").T)))
    # stored beside the router (LG's checkpoints; transformers' conversion_mapping renames it into the router)
    bias = p + ("e_score_correction_bias" if p + "e_score_correction_bias" in w else "gate.e_score_correction_bias")
    choice = scores + w(bias)
    grouped = choice.reshape(len(x), n_group, n_exp // n_group)
    group_score = np.sort(grouped, axis=-1)[..., -2:].sum(-1)
    keep = np.argsort(-group_score, axis=-1, kind="stable")[:, :k_group]
    mask = np.zeros((len(x), n_group), bool)
    np.put_along_axis(mask, keep, True, axis=-1)
    choice = np.where(np.repeat(mask, n_exp // n_group, axis=-1), choice, -np.inf)
    top = np.argsort(-choice, axis=-1, kind="stable")[:, :top_k]
    if forced is not None and forced.shape == top.shape:
        top = forced
    g = np.take_along_axis(scores, top, axis=-1)
    if cfg.get("norm_topk_prob", True):
        g = g / (g.sum(-1, keepdims=True) + 1e-20)
    g = (g * cfg.get("routed_scaling_factor", 2.5)).astype(np.float32)
    fused = p + "experts.gate_up_proj" in w  # transformers' own layout; LG's checkpoints store experts one by one
    gate_up, down_all = (w(p + "experts.gate_up_proj"), w(p + "experts.down_proj")) if fused else (None, None)
    out = np.zeros_like(x)
    for e in np.unique(top):
        tok, slot = np.nonzero(top == e)
        xe = x[tok]
        if fused:
            gu = xe @ gate_up[e].T
            y = (silu(gu[:, : gu.shape[1] // 2]) * gu[:, gu.shape[1] // 2 :]) @ down_all[e].T
        else:
            y = mlp(w, f"{p}experts.{e}.", xe)
        out[tok] += g[tok, slot, None] * y
    return out + mlp(w, p + "shared_experts.", x)


def exaone_moe(c: Config, w: Tensors, ids: np.ndarray, cos, sin, segments, routes=None) -> np.ndarray:
    """ExaoneMoeForCausalLM: pre-norm blocks; dense MLP or sparse MoE per `mlp_layer_types` (LG's first configs:
    `is_moe_layer`; else the first `first_k_dense_replace` layers are dense). MTP blocks never run. `routes`:
    layer -> expert ids [T, top_k] to use instead of the router's own choice."""
    cfg = c.cfg
    if cfg.get("mlp_layer_types") is not None:
        sparse = [t == "sparse" for t in cfg["mlp_layer_types"]]
    elif cfg.get("is_moe_layer") is not None:
        sparse = list(cfg["is_moe_layer"])
    else:
        sparse = [i >= cfg.get("first_k_dense_replace", 1) for i in range(c.n_layers)]
    h, logits = embed_and_head(w, c, "model.embed_tokens.weight", ids)
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        h = h + attention_qk_norm(c, w, p, i, rmsnorm(h, w(p + "input_layernorm.weight"), c.eps), cos, sin, segments)
        x = rmsnorm(h, w(p + "post_attention_layernorm.weight"), c.eps)
        h = h + (sparse_moe(c, w, p + "mlp.", x, (routes or {}).get(i)) if sparse[i] else mlp(w, p + "mlp.", x))
    return logits(rmsnorm(h, w("model.norm.weight"), c.eps))


# HF architecture -> (forward, tensor-name prefix of its language model)
FORWARDS = {
    "LlamaForCausalLM": (llama, ""),
    "ExaoneForCausalLM": (llama, ""),
    "Exaone4ForCausalLM": (exaone4, "model."),
    "Exaone4_5_ForConditionalGeneration": (exaone4, "model.language_model."),
    "ExaoneMoEForCausalLM": (exaone_moe, ""),
    "ExaoneMoeForCausalLM": (exaone_moe, ""),
}


def forward_source(
    source: Checkpoint | Path | str,
    token_ids: Sequence[int],
    segments: Sequence[int] | None = None,
    routes: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """Logits float32 [len(token_ids), vocab] of the checkpoint (a directory, or a loaded Checkpoint whose
    tensor handles are reused); row i predicts token i + 1. `segments`: lengths of independent sequences laid
    end to end in token_ids (positions restart, attention stays inside each). `routes` (a MoE): layer -> the
    experts [T, top_k] another run chose, followed so that a near-tie decided the other way by two float
    computations (a discontinuity) does not pass for a difference of networks; the weights stay this router's."""
    path = Path(source.path if isinstance(source, Checkpoint) else source)
    handles = source.tensors if isinstance(source, Checkpoint) else load_tensors(path)
    c = Config(read_config(path / "config.json"), path / "config.json")
    if c.arch not in FORWARDS:
        raise InputError(f"{c.path}: no source forward for architecture {c.arch!r}; known: {', '.join(FORWARDS)}.")
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0 or ids.min() < 0 or ids.max() >= c.vocab:
        raise InputError(f"source forward: token ids must be a non-empty list within 0..{c.vocab - 1}.")
    cos, sin = rope_tables(c.inv_freq(), len(ids), segments)
    fwd, prefix = FORWARDS[c.arch]
    extra = {"routes": routes} if fwd is exaone_moe else {}
    return fwd(c, Tensors(handles, prefix), ids, cos, sin, segments, **extra).astype(np.float32, copy=False)
