"""EXAONE 4.5, text half: make-tiny exaone4.5 (text + vision + MTP, transformers' names), the text GGUF
(`exaone4`, MTP blocks after layer 63, vision tower left out) run in llama.cpp against transformers'
Exaone4_5_ForConditionalGeneration, the numpy reference, MTP spellings (shared layers, the text-only
Exaone4ForCausalLM config), validate's checks for the sliding window llama.cpp applies and for vision tensors,
and a text_config missing a key."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path, llama_cpp_logits
from gguf_edit import DROP, rewrite
from helpers import run_cli

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.tiny import make_tiny

pytestmark = pytest.mark.slow  # torch / transformers

# 72.. avoids the added tokens (image pad 67); 80 tokens cross the tiny window of 8 many times
TOKENS = [int(t) for t in np.random.default_rng(45).integers(72, 3072, size=80)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("e45")
    ckpt = make_tiny("exaone4.5", root / "ckpt")
    f32 = convert(ckpt, root / "f32.gguf", ConvertOptions(outtype="f32")).output
    return ckpt, f32


def transformers_logits(ckpt: Path, tokens: list[int], window: int | None = None) -> np.ndarray:
    """`window`: run with this sliding window instead of the config's."""
    import torch
    from transformers import AutoConfig, Exaone4_5_ForConditionalGeneration

    config = AutoConfig.from_pretrained(ckpt)
    if window is not None:
        config.text_config.sliding_window = window
    model, info = Exaone4_5_ForConditionalGeneration.from_pretrained(
        ckpt, config=config, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    # every tensor make-tiny wrote under its real name is one transformers loads (the MTP block is not its)
    assert not info["missing_keys"], info["missing_keys"]
    assert all(k.startswith("mtp.") for k in info["unexpected_keys"]), info["unexpected_keys"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([tokens])).logits[0].float().numpy()


def test_make_tiny_writes_transformers_names_vision_and_mtp(tiny):
    from safetensors import safe_open

    ckpt, _ = tiny
    with safe_open(str(ckpt / "model.safetensors"), "np") as f:
        names = set(f.keys())
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["text_config"]["num_hidden_layers"] == 64 and cfg["text_config"]["num_nextn_predict_layers"] == 1
    vc = cfg["vision_config"]
    assert vc["num_key_value_heads"] < vc["num_heads"]
    full = vc["fullatt_block_indexes"]
    assert len(set(np.diff([-1, *full]))) == 1  # evenly spaced
    assert "model.visual.patch_embed.proj.weight" in names and "model.visual.merger.mlp.2.weight" in names
    assert {"mtp.fc.weight", "mtp.norm.weight", "mtp.layers.0.self_attn.q_proj.weight"} <= names
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    assert set(pre) == set(json.loads(fixture_path("exaone-4.5-33b", "preprocessor_config.json").read_text()))
    assert pre["min_pixels"] <= 56 * 56 and pre["max_pixels"] <= 256 * 256  # tiny images
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
    assert ids["<|image_pad|>"] == cfg["image_token_id"] and ids["<|endofturn|>"] == 53


def test_text_file_layout(tiny):
    """block_count 65 = 64 layers + 1 MTP block, nextn tensors in blk.64, no vision tensor, exaone-moe pre."""
    _, f32 = tiny
    f = read_gguf(f32)
    names = {t.name for t in f.tensors}
    assert f.get("general.architecture") == "exaone4"
    assert f.get("exaone4.block_count") == 65 and f.get("exaone4.nextn_predict_layers") == 1
    assert f.get("tokenizer.ggml.pre") == "exaone-moe" and len(f.get("tokenizer.ggml.tokens")) == 4096
    assert {f"blk.64.nextn.{k}.weight" for k in ("eh_proj", "enorm", "hnorm", "shared_head_norm")} <= names
    assert "blk.64.attn_q.weight" in names and "blk.65.attn_q.weight" not in names
    assert not any(n.startswith(("v.", "mm.", "model.visual")) for n in names)
    f.close()


def test_f32_logits_match_transformers_and_the_reference(tiny):
    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.model import forward
    from exaone_gguf.model.source import forward_source

    ckpt, f32 = tiny
    ours = llama_cpp_logits(f32, TOKENS)
    ref = transformers_logits(ckpt, TOKENS)
    numpy_ref = forward(load_checkpoint(ckpt), TOKENS)
    source = forward_source(ckpt, TOKENS)  # the text model by its own HF names (model.language_model.*)
    scale = np.abs(ref).max()
    d_src = np.abs(source - ref).max() / scale
    print(f"exaone4.5 source forward vs transformers {d_src:.3g} of max |logit|")
    assert d_src <= 5e-6
    d_lc = np.abs(ours - ref).max() / scale
    d_np = np.abs(numpy_ref - ref).max() / scale
    print(
        f"exaone4.5 f32: llama.cpp vs transformers {d_lc:.3g}, numpy reference vs transformers {d_np:.3g} of max |logit|"
    )
    assert (ours.argmax(-1) == ref.argmax(-1)).all() and (numpy_ref.argmax(-1) == ref.argmax(-1)).all()
    # measured 7.4e-7 (llama.cpp) and 7.8e-7 (numpy) of max |logit|; the issue allows 1e-4
    assert d_lc <= 5e-6
    assert d_np <= 5e-6


def test_the_prompt_needs_the_window(tiny):
    """The agreement above means llama.cpp applied the sliding window (n_layer() = 64 with the MTP block):
    transformers with the window lifted gives, after the first 8 positions, logits far from llama.cpp's."""
    ckpt, f32 = tiny
    ours = llama_cpp_logits(f32, TOKENS)
    lifted = transformers_logits(ckpt, TOKENS, window=len(TOKENS) + 1)
    scale, window = np.abs(ours).max(), 8
    assert np.abs(ours[:window] - lifted[:window]).max() <= 1e-5 * scale  # same inside the window
    late = np.abs(ours[window + 1 :] - lifted[window + 1 :]).max() / scale
    print(f"exaone4.5: all-global vs windowed logits differ by {late:.3g} of max |logit| past the window")
    assert late > 1e-2


def _read_tensors(path: Path) -> dict[str, bytes]:
    f = read_gguf(path)
    out = {t.name: bytes(f.tensor_bytes(t)) for t in f.tensors}
    f.close()
    return out


def test_shared_mtp_layers_copied_into_every_mtp_block(tiny, tmp_path):
    ckpt, _ = tiny
    shared = tmp_path / "shared"
    shutil.copytree(ckpt, shared)
    cfg = json.loads((shared / "config.json").read_text())
    cfg["text_config"].update(num_nextn_predict_layers=2, mtp_share_layers=True)
    (shared / "config.json").write_text(json.dumps(cfg))
    out = convert(shared, tmp_path / "s.gguf", ConvertOptions(outtype="f32")).output
    f = read_gguf(out)
    assert f.get("exaone4.block_count") == 66 and f.get("exaone4.nextn_predict_layers") == 2
    f.close()
    t = _read_tensors(out)
    for kind in ("attn_q", "ffn_down", "post_ffw_norm", "nextn.eh_proj", "nextn.enorm"):
        assert t[f"blk.64.{kind}.weight"] == t[f"blk.65.{kind}.weight"], kind
    logits = llama_cpp_logits(out, TOKENS[:20])
    assert np.isfinite(logits).all()


def test_text_only_exaone4_config_with_mtp_gives_the_same_tensors(tiny, tmp_path):
    """The text-only spelling (Exaone4ForCausalLM + num_nextn_predict_layers, `model.*` names) maps the MTP
    block as the 4.5 spelling does: the same tensor bytes and block count."""
    from safetensors.torch import load_file, save_file

    ckpt, f32 = tiny
    text = tmp_path / "text"
    text.mkdir()
    w = load_file(ckpt / "model.safetensors")
    w = {
        n.replace("model.language_model.", "model."): v.contiguous()
        for n, v in w.items()
        if not n.startswith("model.visual.")
    }
    save_file(w, text / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((ckpt / "config.json").read_text())["text_config"]
    (text / "config.json").write_text(json.dumps(cfg))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copyfile(ckpt / name, text / name)
    out = convert(text, tmp_path / "t.gguf", ConvertOptions(outtype="f32")).output
    assert _read_tensors(out) == _read_tensors(f32)
    f = read_gguf(out)
    assert f.get("exaone4.block_count") == 65 and f.get("exaone4.nextn_predict_layers") == 1
    f.close()


def validate_cli(gguf: Path, *args: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """`exaone-gguf validate` as a user runs it: exit code and check name -> (status, detail) from --json."""
    report = gguf.with_suffix(".json")
    r = run_cli("validate", str(gguf), "--json", str(report), *args)
    checks = {c["name"]: (c["status"], c["detail"]) for c in json.loads(report.read_text())["checks"]}
    return r.returncode, checks


def test_honest_text_file_passes_validate(tiny):
    ckpt, f32 = tiny
    code, checks = validate_cli(f32, "--reference", str(ckpt), "--max-tokens", "64")
    assert code == 0, {n: c for n, c in checks.items() if c[0] == "fail"}
    assert checks["metadata: MTP blocks"] == ("pass", "1 MTP block(s) (blk.64): kept, not run by llama.cpp")
    assert checks["metadata: sliding window"][0] == "pass"


@pytest.mark.parametrize(
    "kv",
    [
        {"exaone4.nextn_predict_layers": DROP},  # LG's first GGUF: 65 blocks, llama.cpp sees 65 layers
        {"exaone4.nextn_predict_layers": 0},
        {"exaone4.block_count": 66},  # 66 - 1 = 65 layers
    ],
    ids=["nextn-missing", "nextn-zero", "block-count-66"],
)
def test_file_llama_cpp_would_run_all_global_fails(tiny, tmp_path, kv):
    _, f32 = tiny
    bad = rewrite(f32, tmp_path / "bad.gguf", kv=kv)
    code, checks = validate_cli(bad)
    assert code == 1
    status, detail = checks["metadata: sliding window"]
    assert status == "fail" and "65 layers" in detail and "would run every layer as global" in detail, detail
    assert checks["metadata: MTP blocks"][0] == "fail"  # the nextn tensors sit in a block llama.cpp would run


def test_text_file_with_vision_tensors_fails(tiny, tmp_path):
    _, f32 = tiny
    bad = rewrite(f32, tmp_path / "bad.gguf", add_tensors={"v.blk.0.attn_qkv.weight": np.ones((64, 32))})
    code, checks = validate_cli(bad)
    assert code == 1
    status, detail = checks["metadata: no vision tensors in the text file"]
    assert status == "fail" and "v.blk.0.attn_qkv.weight" in detail and "--mmproj" in detail
    code, checks = validate_cli(f32)
    assert code == 0 and "metadata: no vision tensors in the text file" not in checks


@pytest.mark.parametrize("key", ["hidden_size", "num_attention_heads", "vocab_size"])
def test_text_config_missing_a_key_is_refused(tiny, tmp_path, key):
    ckpt, _ = tiny
    src = tmp_path / "src"
    shutil.copytree(ckpt, src)
    cfg = json.loads((src / "config.json").read_text())
    del cfg["text_config"][key]
    (src / "config.json").write_text(json.dumps(cfg))
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "o.gguf"
    r = run_cli("convert", str(src), "-o", str(out), "--outtype", "f32")
    assert r.returncode == 2
    msg = " ".join(r.stderr.split())
    assert "config.json (text_config)" in msg and f"'{key}'" in msg and msg.count(". ") <= 1, msg
    assert not out.exists() and not list(tmp_path.glob("o.gguf*"))
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_vision_config_missing_a_key_is_refused(tiny, tmp_path):
    """The vision tensors the text file leaves out are listed from vision_config; without its sizes the
    checkpoint's model.visual.* tensors cannot be accounted for: one sentence, exit 2, nothing written."""
    ckpt, _ = tiny
    src = tmp_path / "src"
    shutil.copytree(ckpt, src)
    cfg = json.loads((src / "config.json").read_text())
    del cfg["vision_config"]["depth"]
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o.gguf"
    r = run_cli("convert", str(src), "-o", str(out), "--outtype", "f32")
    msg = " ".join(r.stderr.split())
    assert r.returncode == 2 and "vision_config" in msg and "'depth'" in msg, msg
    assert not out.exists() and not list(tmp_path.glob("o.gguf*"))


def test_the_33b_config_reads_as_exaone4_with_one_mtp_block():
    """The 33B's config (fixture): text tower from text_config, 64 layers + 1 MTP block, 32 vision blocks left out;
    make-tiny --from-config shrinks the text and vision towers and keeps every key."""
    from exaone_gguf.families import family_for, parse_config
    from exaone_gguf.tiny import shrink_config

    path = fixture_path("exaone-4.5-33b", "config.json")
    cfg = json.loads(path.read_text())
    spec = parse_config(cfg, path)
    fam = family_for(spec)
    assert (fam.name, fam.arch, spec.num_layers, spec.vocab_size, spec.is_hybrid) == (
        "exaone4_5",
        "exaone4",
        64,
        153600,
        True,
    )
    hp = {k: v for k, _, v, _ in fam.hparams(spec)}
    assert hp["exaone4.block_count"] == 65 and hp["exaone4.nextn_predict_layers"] == 1
    names = {m.gguf_name: m.hf_name for m in fam.tensor_map(spec)}
    assert names["blk.64.nextn.eh_proj.weight"] == "mtp.fc.weight"
    assert names["blk.64.attn_q.weight"] == "mtp.layers.0.self_attn.q_proj.weight"
    assert names["blk.63.attn_q.weight"] == "model.language_model.layers.63.self_attn.q_proj.weight"
    left = fam.left_out(spec)
    assert len(left) == 1 + 32 * 12 + 5 and all(n.startswith("model.visual.") for n in left)
    assert left["model.visual.blocks.0.attn.qkv.weight"] == (1280 + 2 * 8 * 80, 1280)  # GQA: 8 of 16 heads
    small = shrink_config(cfg, layers=8, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128)
    assert set(small) == set(cfg) and set(small["text_config"]) == set(cfg["text_config"])
    vc, big = small["vision_config"], cfg["vision_config"]
    assert set(vc) == set(big) and (vc["depth"], vc["hidden_size"], vc["num_key_value_heads"]) == (4, 64, 2)
    assert vc["fullatt_block_indexes"] == [1, 3] and vc["out_hidden_size"] == 64
    assert all(vc[k] == big[k] for k in ("patch_size", "spatial_merge_size", "window_size", "temporal_patch_size"))
    assert sum(math.prod(s) for s in fam.left_out(parse_config(small, path)).values()) < 10**6
    s2 = parse_config(small, path)
    assert (s2.num_layers, s2.hidden_size, s2.extras["nextn"]) == (8, 64, 1)
