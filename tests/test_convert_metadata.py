"""Every real config in ../shared/fixtures, shrunk with --from-config, converts to the metadata llama.cpp needs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fixture_path

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.tiny import make_tiny

SHRINK = dict(layers=2, hidden=256, heads=4, kv_heads=2, intermediate=512)
_L3 = {"rope_freqs": True}

# fixture, arch, expected values (after shrinking); None = key must be absent
_30 = {"rope.freq_base": 500000.0, "rope_freqs": False, "tied": False, "context_length": 4096}
_35 = {"rope.freq_base": 1e6, "rope_freqs": True, "factor": 8.0, "context_length": 32768}
_40 = {"rope.freq_base": 1e6, "rope_freqs": True, "factor": 16.0, "tied": True, "context_length": 65536}

# fixture, arch, expected values. Quantized copies (AWQ, mlx, compressed-tensors) carry the original keys;
# their quantization block is dropped so the config describes the unquantized model.
CASES = [
    ("exaone-3.0-7.8B-instruct", "exaone", _30),
    ("exaone-3.0-7.8B-instruct-awq", "exaone", _30),
    ("exaone-3.5-2.4B-instruct-mlx-4bit", "exaone", {**_35, "tied": True}),
    ("exaone-3.5-2.4B-instruct-awq", "exaone", {**_35, "tied": False}),  # LG's AWQ build unties lm_head
    ("exaone-3.5-32B-instruct-abliterated", "exaone", {**_35, "tied": False}),
    ("exaone-3.5-32B-instruct-awq", "exaone", {**_35, "tied": False}),
    ("exaone-deep-32B-mlx-4bit", "exaone", {**_35, "tied": False}),
    ("exaone-4.0-1.2B", "exaone4", _40),
    ("exaone-4.0-1.2B-w4a16-compressed-tensors", "exaone4", _40),
]


def _strip_quant(cfg_path, tmp_path):
    """mlx copies carry a `quantization` block but the original keys: drop it to get the original config."""
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization", None)
    cfg.pop("quantization_config", None)
    out = tmp_path / "config.json"
    out.write_text(json.dumps(cfg))
    return out, cfg


@pytest.mark.parametrize("fixture,arch,want", CASES, ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_real_config_metadata(fixture, arch, want, tmp_path):
    cfg_path, cfg = _strip_quant(fixture_path(fixture, "config.json"), tmp_path)
    src = make_tiny(None, tmp_path / "ck", from_config=cfg_path, **SHRINK)
    out = convert(src, tmp_path / "m.gguf", ConvertOptions(outtype="f16")).output
    f = read_gguf(out)
    md = f.metadata
    assert md["general.architecture"] == arch
    shrunk = json.loads((src / "config.json").read_text())
    assert {k for k in cfg if k not in ("layer_types",)} <= set(shrunk)  # every key of the real config is kept
    head_dim = shrunk.get("head_dim") or shrunk["hidden_size"] // shrunk["num_attention_heads"]
    expect = {
        f"{arch}.block_count": 2,
        f"{arch}.embedding_length": 256,
        f"{arch}.feed_forward_length": 512,
        f"{arch}.attention.head_count_kv": 2,
        f"{arch}.context_length": want["context_length"],
        f"{arch}.rope.freq_base": want["rope.freq_base"],
        f"{arch}.attention.layer_norm_rms_epsilon": np.float32(1e-5),
        f"{arch}.attention.key_length": head_dim,
        f"{arch}.vocab_size": 102400,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 361,
        "tokenizer.ggml.unknown_token_id": 3,
        "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.add_bos_token": False,
        "general.file_type": 1,
        "general.quantization_version": 2,
    }
    for key, value in expect.items():
        assert md.get(key) == value, key
    if arch == "exaone":
        assert md["exaone.rope.dimension_count"] == head_dim
        assert md["tokenizer.ggml.pre"] == "exaone"
    else:
        assert md["tokenizer.ggml.pre"] == "exaone4"
    assert len(md["tokenizer.ggml.tokens"]) == 102400
    assert md["tokenizer.ggml.tokens"][361] == "[|endofturn|]"
    assert md["tokenizer.chat_template"].count("[|assistant|]") >= 1
    names = {t.name: t for t in f.tensors}
    assert ("output.weight" in names) == (not want["tied"])
    assert ("rope_freqs.weight" in names) == want["rope_freqs"]
    if want["rope_freqs"]:
        rf = f.tensor_f32("rope_freqs.weight")
        assert rf.shape == (head_dim // 2,) and rf.max() == pytest.approx(want["factor"]) and rf.min() == 1.0
    for t in f.tensors:  # norms and rope_freqs stay F32, weights F16
        assert t.tensor_type.name == ("F32" if len(t.shape) == 1 else "F16"), t.name
    assert not any(k.startswith(f"{arch}.attention.sliding_window") for k in md)


@pytest.mark.slow
def test_hybrid_sliding_window_keys(tiny_gguf):
    md = read_gguf(tiny_gguf("exaone4-hybrid", "f32")).metadata
    assert md["exaone4.block_count"] == 64
    assert md["exaone4.attention.sliding_window"] == 8
    pattern = list(md["exaone4.attention.sliding_window_pattern"])
    assert pattern == [i % 4 != 3 for i in range(64)]  # LLLG


@pytest.mark.slow
def test_exaone3_writes_rms_epsilon_key_that_llama_cpp_requires(tiny_gguf):
    # llama.cpp's own converter omits this key for EXAONE 3.x and llama.cpp then refuses the file
    md = read_gguf(tiny_gguf("exaone3", "f32")).metadata
    assert md["exaone.attention.layer_norm_rms_epsilon"] == np.float32(1e-5)
    assert "exaone.attention.layer_norm_epsilon" not in md


def test_license_and_tags_from_model_card(tiny_gguf):
    md = read_gguf(tiny_gguf("exaone4", "f32")).metadata
    assert md["general.license"] == "apache-2.0"
    assert list(md["general.languages"]) == ["en", "ko"]
    assert md["general.basename"] == "tiny-exaone4" and md["general.size_label"].endswith("M")
