"""K-EXAONE (exaone-moe): pre-norm blocks, per-head q/k norms, a dense prefix, then routed + shared experts.

    h = token_embd[ids]
    per layer i (the num_hidden_layers layers; MTP blocks never run):
        x = attn_norm(h)
        q, k, v = attn_q(x), attn_k(x), attn_v(x)
        q, k = attn_q_norm(q), attn_k_norm(k)                    # RMSNorm per head over D
        if is_sliding(i): q, k = rope(q), rope(k)                # RoPE on sliding layers only (global: NoPE)
        h = h + attn_output(attn(q, k, v, window if is_sliding(i) else None))
        x = ffn_norm(h)
        if i < leading_dense: h = h + ffn_down(silu(ffn_gate(x)) * ffn_up(x))
        else:                 h = h + moe(x) + shared_expert(x)
    logits = output(output_norm(h))

moe(x), per token (written out in `route` and `moe`):
    s      = sigmoid(ffn_gate_inp(x))                            # one score per expert, in (0, 1)
    choice = s + exp_probs_b                                     # the bias steers the choice only
    groups: keep the topk_group groups whose two best `choice` values sum highest, mask the rest
    top    = the top_k experts by `choice` among the kept groups
    g      = s[top] / sum(s[top]) if norm_topk_prob else s[top]  # weights from the unbiased scores
    out    = routed_scale * sum_j g_j * expert_{top_j}(x)        # expert e: down_e(silu(gate_e(x)) * up_e(x))

Weights are read by GGUF tensor name (blk.{i}.ffn_gate_exps.weight is [n_expert, n_ff_exp, n_embd] in numpy
layout), so the same forward runs on the checkpoint (through the family's tensor table) or on a GGUF file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.model.ops import (
    LINEAR_OBSERVERS,
    apply_rope,
    attention,
    check_tokens,
    embed,
    matmul_t,
    output_head,
    output_logits,
    rmsnorm,
    rope_tables,
    silu,
    split_heads,
)
from exaone_gguf.model.rope import inv_freq
from exaone_gguf.model.weights import Weights


def _observe(name: str, x: np.ndarray, expert: tuple[int, int] | None = None) -> None:
    for observe in LINEAR_OBSERVERS:  # the imatrix collector: every product's input, experts per expert
        if expert is None:
            observe(name, x)
        else:
            observe(name, x, expert)


def linear(w: Weights, name: str, x: np.ndarray) -> np.ndarray:
    _observe(name + ".weight", x)
    return matmul_t(w.product_input(name + ".weight", x), w.get(name + ".weight"))


def swiglu(
    w: Weights,
    names: tuple[str, str, str],
    mats: tuple[np.ndarray, ...],
    x: np.ndarray,
    expert: tuple[int, int] | None = None,
) -> np.ndarray:
    """down(silu(gate x) * up x) for weight matrices [F, H], [F, H], [H, F] (the GGUF tensors `names`: a file's
    inputs are rounded as llama.cpp rounds them before each product; `expert`: (index, expert count) when the
    matrices are one expert's slice of 3-D tensors)."""
    gate, up, down = mats
    _observe(names[0], x, expert)
    _observe(names[1], x, expert)
    h = silu(matmul_t(w.product_input(names[0], x), gate)) * matmul_t(w.product_input(names[1], x), up)
    _observe(names[2], h, expert)
    return matmul_t(w.product_input(names[2], h), down)


def route(w: Weights, spec: ModelSpec, p: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per token: the chosen experts [T, top_k] and their weights [T, top_k]. When the weights carry a `routing`
    dict, the layer's choice and the margin between the last chosen and first unchosen selection score go in it;
    when they carry `forced_routing` (layer -> [T, top_k] expert ids), those experts are used instead."""
    e = spec.extras
    n_exp, k, n_group, k_group = e["n_experts"], e["top_k"], e["n_group"], e["topk_group"]
    logits = linear(w, p + "ffn_gate_inp", x)  # [T, E]
    s = 1.0 / (1.0 + np.exp(-logits)) if e["scoring"] == "sigmoid" else _softmax(logits)
    choice = s + w.get(p + "exp_probs_b.bias")
    if n_group > 1:  # group-limited: a group counts by the sum of its two best choices
        grouped = choice.reshape(len(x), n_group, n_exp // n_group)
        group_score = np.sort(grouped, axis=-1)[..., -2:].sum(-1)  # [T, G]
        keep = np.argsort(-group_score, axis=-1, kind="stable")[:, :k_group]
        mask = np.zeros((len(x), n_group), bool)
        np.put_along_axis(mask, keep, True, axis=-1)
        choice = np.where(np.repeat(mask, n_exp // n_group, axis=-1), choice, -np.inf)
    order = np.argsort(-choice, axis=-1, kind="stable")
    top = order[:, :k]
    layer = int(p.split(".")[1])
    routing = getattr(w, "routing", None)  # validate's routing figure: the choice and its margin per token
    if routing is not None:
        ranked = np.take_along_axis(choice, order[:, k - 1 : k + 1], axis=-1)
        margin = ranked[:, 0] - ranked[:, 1] if n_exp > k else np.full(len(x), np.inf)
        routing[layer] = (top, margin)
    forced = getattr(w, "forced_routing", None)  # validate's structure check: llama.cpp's own choice
    if forced is not None and layer in forced and forced[layer].shape == top.shape:
        top = forced[layer]
    g = np.take_along_axis(s, top, axis=-1)
    if e["norm_topk"]:
        g = g / (g.sum(-1, keepdims=True) + 1e-20)
    return top, g * e["routed_scale"]


def moe(w: Weights, spec: ModelSpec, p: str, x: np.ndarray) -> np.ndarray:
    """Routed experts (each expert runs on the tokens that chose it) plus the always-on shared expert."""
    top, g = route(w, spec, p, x)
    names = tuple(p + f"ffn_{n}_exps.weight" for n in ("gate", "up", "down"))
    gate, up, down = (w.get(n) for n in names)
    out = np.zeros_like(x)
    for e in np.unique(top):
        tok, slot = np.nonzero(top == e)
        out[tok] += g[tok, slot, None] * swiglu(w, names, (gate[e], up[e], down[e]), x[tok], (int(e), len(gate)))
    if spec.extras["n_shared"]:
        shared = tuple(p + f"ffn_{n}_shexp.weight" for n in ("gate", "up", "down"))
        out += swiglu(w, shared, tuple(w.get(n) for n in shared), x)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def forward(w: Weights, spec: ModelSpec, token_ids: list[int], segments: Sequence[int] | None = None) -> np.ndarray:
    """Logits [T, vocab]; `segments`: lengths of independent sequences laid end to end in token_ids."""
    ids = check_tokens(spec, token_ids)
    nh, nkv, d, eps = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.rms_eps
    cos, sin = rope_tables(inv_freq(spec), len(ids), segments)
    h = embed(w, "token_embd.weight", ids)  # the rows asked for, never the [V, H] table
    for i in range(spec.num_layers):
        p = f"blk.{i}."
        x = rmsnorm(h, w.get(p + "attn_norm.weight"), eps)
        q = rmsnorm(split_heads(linear(w, p + "attn_q", x), nh, d), w.get(p + "attn_q_norm.weight"), eps)
        k = rmsnorm(split_heads(linear(w, p + "attn_k", x), nkv, d), w.get(p + "attn_k_norm.weight"), eps)
        v = split_heads(linear(w, p + "attn_v", x), nkv, d)
        if spec.is_sliding(i):
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        window = spec.sliding_window if spec.is_sliding(i) else None
        h = h + linear(w, p + "attn_output", attention(q, k, v, window, segments))
        x = rmsnorm(h, w.get(p + "ffn_norm.weight"), eps)
        if i < spec.extras["dense_layers"]:
            dense = tuple(p + f"ffn_{n}.weight" for n in ("gate", "up", "down"))
            h = h + swiglu(w, dense, tuple(w.get(n) for n in dense), x)
        else:
            h = h + moe(w, spec, p, x)
    h = rmsnorm(h, w.get("output_norm.weight"), eps)
    return output_logits(w, output_head(w), h)
