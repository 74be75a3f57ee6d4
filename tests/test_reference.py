"""The numpy reference forwards against transformers (torch, CPU, float32) on tiny random models: the one that
reads the source through the converter's tensor table (`table`) and the source's own forward by HF names and
config keys (`source`, model/source.py), which must agree with transformers independently.

EXAONE 4 uses transformers' own Exaone4ForCausalLM. EXAONE 3.x has no transformers class (remote code
only), but its block is a Llama block: a LlamaForCausalLM is saved under EXAONE 3 tensor names with an
EXAONE 3 style config.json. Norm weights are randomised so that a skipped or misplaced norm shows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import Exaone4Config, Exaone4ForCausalLM, LlamaConfig, LlamaForCausalLM

from exaone_gguf.errors import InputError
from exaone_gguf.families import load_checkpoint
from exaone_gguf.model import forward
from exaone_gguf.model.source import forward_source

pytestmark = pytest.mark.slow  # torch / transformers

VOCAB = 384
SEQ = 48
TOL = 1e-3  # max |ref - hf| <= TOL * max |hf logit|

# llama3 scaling with a short original context, so that all three bands (kept, blended, divided)
# fall on frequencies that matter within 48 positions. Factor 16 as in EXAONE 4.0.
LLAMA3 = {
    "rope_type": "llama3",
    "factor": 16.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}

EXAONE3_NAMES = [  # Llama name fragment -> EXAONE 3 name fragment
    ("model.embed_tokens.", "transformer.wte."),
    ("model.layers.", "transformer.h."),
    (".input_layernorm.", ".ln_1."),
    (".self_attn.o_proj.", ".attn.attention.out_proj."),
    (".self_attn.", ".attn.attention."),
    (".post_attention_layernorm.", ".ln_2."),
    (".mlp.gate_proj.", ".mlp.c_fc_0."),
    (".mlp.up_proj.", ".mlp.c_fc_1."),
    (".mlp.down_proj.", ".mlp.c_proj."),
    ("model.norm.", "transformer.ln_f."),
]


def _randomise_norms(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.3 * torch.randn_like(param))


def _save(model: torch.nn.Module, config: dict, out: Path, tied: bool, rename=None) -> Path:
    """Write config.json + model.safetensors the way real checkpoints look (no lm_head when tied)."""
    out.mkdir(parents=True)
    tensors = {}
    for name, t in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        for old, new in rename or []:
            name = name.replace(old, new)
        tensors[name] = t.detach().numpy().copy()
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _hf_logits(model: torch.nn.Module, tokens: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float().numpy()


def _exaone4(out: Path, hybrid: bool) -> tuple[Path, np.ndarray, list[int]]:
    torch.manual_seed(4)
    n_layers = 4 if hybrid else 2
    cfg = {
        "architectures": ["Exaone4ForCausalLM"],
        "model_type": "exaone4",
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": n_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": LLAMA3,
        "max_position_embeddings": 4096,
        "initializer_range": 0.5,
        "tie_word_embeddings": not hybrid,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "sliding_window": 4 if hybrid else None,
        "sliding_window_pattern": "LLLG" if hybrid else None,
        "layer_types": (["sliding_attention"] * 3 + ["full_attention"]) if hybrid else ["full_attention"] * n_layers,
    }
    hf_cfg = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "rope_scaling", "rope_theta")}
    hf_cfg["rope_parameters"] = {**LLAMA3, "rope_theta": cfg["rope_theta"]}
    model = Exaone4ForCausalLM(Exaone4Config(**hf_cfg, attn_implementation="eager")).eval()
    _randomise_norms(model)
    tokens = np.random.default_rng(4).integers(0, VOCAB, SEQ).tolist()
    return _save(model, cfg, out, tied=not hybrid), _hf_logits(model, tokens), tokens


def _llama_model(seed: int, tied: bool, head_dim: int, hidden: int, rope_scaling: dict | None, theta: float):
    torch.manual_seed(seed)
    rope = (
        {"rope_type": "default", "rope_theta": theta} if rope_scaling is None else {**rope_scaling, "rope_theta": theta}
    )
    hf = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        hidden_act="silu",
        rms_norm_eps=1e-5,
        rope_parameters=rope,
        max_position_embeddings=4096,
        initializer_range=0.5,
        tie_word_embeddings=tied,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(hf).eval()
    _randomise_norms(model)
    return model


def _exaone3(out: Path, version: str) -> tuple[Path, np.ndarray, list[int]]:
    """3.0: untied, no head_dim key, theta 5e5, no scaling. 3.5: tied, head_dim != hidden/heads, llama3."""
    v35 = version == "3.5"
    hidden, head_dim = (96, 32) if v35 else (64, 16)
    model = _llama_model(
        35 if v35 else 30,
        tied=v35,
        head_dim=head_dim,
        hidden=hidden,
        rope_scaling=LLAMA3 if v35 else None,
        theta=1e6 if v35 else 5e5,
    )
    cfg = {
        "architectures": ["ExaoneForCausalLM"],
        "model_type": "exaone",
        "vocab_size": VOCAB,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "silu",
        "rope_theta": 1e6 if v35 else 5e5,
        "rope_scaling": LLAMA3 if v35 else None,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": v35,
        "bos_token_id": 1,
        "eos_token_id": 361,
        "pad_token_id": 0,
    }
    if v35:
        cfg["head_dim"] = head_dim
    tokens = np.random.default_rng(3).integers(0, VOCAB, SEQ).tolist()
    return _save(model, cfg, out, tied=v35, rename=EXAONE3_NAMES), _hf_logits(model, tokens), tokens


def _llama(out: Path) -> tuple[Path, np.ndarray, list[int]]:
    model = _llama_model(7, tied=False, head_dim=16, hidden=64, rope_scaling=None, theta=10000.0)
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    tokens = np.random.default_rng(7).integers(0, VOCAB, SEQ).tolist()
    return _save(model, cfg, out, tied=False), _hf_logits(model, tokens), tokens


BUILDERS = {
    "exaone4-global-tied": lambda out: _exaone4(out, hybrid=False),
    "exaone4-hybrid-LLLG": lambda out: _exaone4(out, hybrid=True),
    "exaone3.0-untied": lambda out: _exaone3(out, "3.0"),
    "exaone3.5-tied-llama3": lambda out: _exaone3(out, "3.5"),
    "llama": _llama,
}
# A tensor whose 1% scaling must be visible in the logits. For EXAONE 4 it must sit outside a
# post-norm's input (o_proj, up/down_proj, v_proj) or a q/k norm's input (q_proj, k_proj): RMSNorm cancels scale.
CORRUPT = {
    "exaone4-global-tied": "model.layers.1.self_attn.q_norm.weight",
    "exaone4-hybrid-LLLG": "model.layers.0.post_feedforward_layernorm.weight",
    "exaone3.0-untied": "transformer.h.1.mlp.c_proj.weight",
    "exaone3.5-tied-llama3": "transformer.h.0.attn.attention.v_proj.weight",
    "llama": "model.layers.2.self_attn.o_proj.weight",
}


# the two forwards of a checkpoint directory
FORWARDS = {
    "table": lambda path, tokens: forward(load_checkpoint(path), tokens),
    "source": forward_source,
}


@pytest.fixture(params=sorted(FORWARDS))
def run(request):
    return FORWARDS[request.param]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def built(request, tmp_path_factory):
    name = request.param
    return (name, *BUILDERS[name](tmp_path_factory.mktemp(name) / "ckpt"))


def _rel_diff(ref: np.ndarray, hf: np.ndarray) -> float:
    return float(np.abs(ref - hf).max() / np.abs(hf).max())


def test_matches_transformers(built, run):
    name, path, hf, tokens = built
    ref = run(path, tokens)
    assert ref.dtype == np.float32 and ref.shape == (SEQ, VOCAB)
    # peaked distributions, or quantisation error would be invisible downstream
    p = np.exp(hf - hf.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert np.median(p.max(-1)) > 0.3, name
    assert (ref.argmax(-1) == hf.argmax(-1)).all(), name
    assert _rel_diff(ref, hf) <= TOL, (name, _rel_diff(ref, hf))


def test_corrupted_weight_is_caught(built, run, tmp_path):
    name, path, hf, tokens = built
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    tensors = load_file(str(bad / "model.safetensors"))
    tensors[CORRUPT[name]] = tensors[CORRUPT[name]] * np.float32(1.01)
    save_file(tensors, str(bad / "model.safetensors"))
    ref = run(bad, tokens)
    assert _rel_diff(ref, hf) > TOL, (name, _rel_diff(ref, hf))


# Config edits the comparison must notice: each is a plausible converter/reference mistake.
CONFIG_MISTAKES = [
    ("exaone4-hybrid-LLLG", "sliding_window", 5),  # window off by one (48 tokens through a 4-token window)
    ("exaone4-hybrid-LLLG", "layer_types", ["sliding_attention"] * 4),  # RoPE + window on the global layer
    ("exaone4-global-tied", "rope_scaling", None),  # llama3 scaling dropped
    ("exaone3.5-tied-llama3", "rope_theta", 1e4),
    ("exaone3.0-untied", "layer_norm_epsilon", 1e-1),
]


def _with_config(path: Path, out: Path, key: str, value) -> Path:
    shutil.copytree(path, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg[key] = value
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize(
    "built,key,value", [pytest.param(n, k, v, id=f"{n}-{k}") for n, k, v in CONFIG_MISTAKES], indirect=["built"]
)
def test_config_mistake_is_caught(built, run, tmp_path, key, value):
    name, path, hf, tokens = built
    ref = run(_with_config(path, tmp_path / "bad", key, value), tokens)
    assert _rel_diff(ref, hf) > TOL, (name, key, _rel_diff(ref, hf))


@pytest.mark.parametrize("built", ["llama"], indirect=True)
def test_gqa_grouping_read_wrong_is_refused(built, run, tmp_path):
    """num_key_value_heads 4 instead of 2: k/v projections no longer fit the heads, and the forward says so."""
    name, path, hf, tokens = built
    bad = _with_config(path, tmp_path / "bad", "num_key_value_heads", 4)
    with pytest.raises(ValueError, match="cannot reshape array of size (2048|1536) into shape"):  # 2 kv heads, not 4
        run(bad, tokens)


def test_bad_token_ids(built, run):
    name, path, _, _ = built
    for ids in ([], [0, VOCAB], [-1]):
        with pytest.raises(InputError):
            run(path, ids)
