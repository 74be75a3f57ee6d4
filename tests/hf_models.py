"""Run tiny checkpoints in transformers (the `reference` extra) for cross-checks.

EXAONE 3 has no transformers class: its weights renamed to Llama names run in LlamaForCausalLM (same network).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EXAONE3_TO_LLAMA = [
    ("transformer.wte.", "model.embed_tokens."),
    ("transformer.ln_f.", "model.norm."),
    ("transformer.h.", "model.layers."),
    (".ln_1.", ".input_layernorm."),
    (".ln_2.", ".post_attention_layernorm."),
    (".attn.attention.out_proj.", ".self_attn.o_proj."),
    (".attn.attention.", ".self_attn."),
    (".mlp.c_fc_0.", ".mlp.gate_proj."),
    (".mlp.c_fc_1.", ".mlp.up_proj."),
    (".mlp.c_proj.", ".mlp.down_proj."),
]


def llamafy_exaone3(src: Path, dst: Path) -> Path:
    """Write a LlamaForCausalLM copy of an EXAONE 3 checkpoint (renamed weights, Llama config keys)."""
    from safetensors.torch import load_file, save_file

    cfg = json.loads((src / "config.json").read_text())
    weights = {}
    for name, arr in load_file(src / "model.safetensors").items():
        for a, b in EXAONE3_TO_LLAMA:
            name = name.replace(a, b)
        weights[name] = arr
    dst.mkdir(parents=True, exist_ok=True)
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    heads = cfg["num_attention_heads"]
    llama = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["intermediate_size"],
        "num_hidden_layers": cfg["num_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": cfg.get("num_key_value_heads", heads),
        "head_dim": cfg.get("head_dim", cfg["hidden_size"] // heads),
        "rms_norm_eps": cfg["layer_norm_epsilon"],
        "rope_theta": cfg["rope_theta"],
        "rope_scaling": cfg.get("rope_scaling"),
        "max_position_embeddings": cfg["max_position_embeddings"],
        "tie_word_embeddings": cfg.get("tie_word_embeddings", True),
        "vocab_size": cfg["vocab_size"],
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    (dst / "config.json").write_text(json.dumps(llama))
    return dst


def cast_checkpoint(src: Path, dst: Path, dtype: str) -> Path:
    """A copy of the checkpoint `src` (one model.safetensors) with its weights stored as `dtype` ("float32",
    "float16", "bfloat16") and config.json saying so."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    save_file(
        {k: v.to(getattr(torch, dtype)) for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"}
    )
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, "torch_dtype": dtype, "dtype": dtype}, indent=2))
    return dst


def transformers_logits(ckpt: Path, tokens: list[int], workdir: Path) -> np.ndarray:
    """float32 logits [T, V] of the checkpoint run by transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = json.loads((ckpt / "config.json").read_text())
    if cfg["architectures"][0] == "ExaoneForCausalLM":
        ckpt = llamafy_exaone3(ckpt, workdir / (ckpt.name + "-llama"))
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([tokens])).logits[0]
    return out.float().numpy()
