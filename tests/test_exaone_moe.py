"""K-EXAONE (exaone-moe): tiny checkpoints of both config spellings, per-expert and fused experts, converted to
f32 and run in llama.cpp against transformers' ExaoneMoeForCausalLM; bad inputs get one sentence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_cpp_logits

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.tiny import make_tiny

pytestmark = pytest.mark.slow  # torch / transformers

TOKENS = [int(t) for t in np.random.default_rng(12).integers(64, 3064, size=60)]  # crosses the window of 16


def fuse_experts(src: Path, dst: Path) -> Path:
    """A copy of a per-expert checkpoint with transformers' fused layout (experts.gate_up_proj / down_proj)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    w = load_file(src / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    E = cfg["num_experts"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp.experts."
        if f"{p}0.gate_proj.weight" not in w:
            continue
        g = [w.pop(f"{p}{e}.gate_proj.weight") for e in range(E)]
        u = [w.pop(f"{p}{e}.up_proj.weight") for e in range(E)]
        d = [w.pop(f"{p}{e}.down_proj.weight") for e in range(E)]
        w[f"{p}gate_up_proj"] = torch.stack([torch.cat([a, b]) for a, b in zip(g, u)]).contiguous()
        w[f"{p}down_proj"] = torch.stack(d).contiguous()
    save_file(w, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("kexaone")
    out = {}
    for recipe in ("k-exaone", "k-exaone-moe-e"):
        d = make_tiny(recipe, root / recipe)
        out[(recipe, "per-expert")] = d
        out[(recipe, "fused")] = fuse_experts(d, root / f"{recipe}-fused")
    return out


def hf_config(ckpt: Path):
    """transformers' ExaoneMoeConfig for either spelling (LG's first spelling's keys renamed)."""
    from transformers import ExaoneMoeConfig

    cfg = json.loads((ckpt / "config.json").read_text())
    if "is_moe_layer" in cfg:
        cfg["first_k_dense_replace"] = cfg.pop("first_last_k_dense_replace")
        cfg["mlp_layer_types"] = ["sparse" if m else "dense" for m in cfg.pop("is_moe_layer")]
    for k in ("architectures", "model_type", "torch_dtype", "transformers_version", "_name_or_path"):
        cfg.pop(k, None)
    return ExaoneMoeConfig(**cfg)


def transformers_run(ckpt: Path, tokens: list[int]):
    """f32 logits and, per MoE layer, each position's gap between the k-th and (k+1)-th selection score."""
    import torch
    from transformers import ExaoneMoeForCausalLM

    model, info = ExaoneMoeForCausalLM.from_pretrained(
        ckpt, config=hf_config(ckpt), dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    # every tensor make-tiny wrote under its real name is one transformers loads (MTP blocks are not its)
    assert not info["missing_keys"], info["missing_keys"]
    assert all(k.startswith("mtp.") for k in info["unexpected_keys"]), info["unexpected_keys"]
    gaps = []

    def hook(mod, args, _out):
        x = args[0].reshape(-1, args[0].shape[-1]).float()
        s = torch.sigmoid(x @ mod.weight.float().T) + mod.e_score_correction_bias
        top = torch.sort(s, dim=-1, descending=True).values
        k = model.config.num_experts_per_tok
        gaps.append((top[:, k - 1] - top[:, k]).numpy())

    for layer in model.model.layers:
        if hasattr(layer.mlp, "gate"):
            layer.mlp.gate.register_forward_hook(hook)
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].numpy()
    return logits, np.min(np.stack(gaps), axis=0)


NEAR_TIE = 1e-5  # a selection-score gap a float32 reordering can cross (scores are ~1)


@pytest.mark.parametrize("recipe", ["k-exaone", "k-exaone-moe-e"])
@pytest.mark.parametrize("layout", ["per-expert", "fused"])
def test_f32_logits_match_transformers(ckpts, tmp_path, recipe, layout):
    ckpt = ckpts[(recipe, layout)]
    gguf = tmp_path / "m.gguf"
    convert(ckpt, gguf, ConvertOptions(outtype="f32"))
    ours = llama_cpp_logits(gguf, TOKENS)
    ref, gaps = transformers_run(ckpt, TOKENS)
    ties = gaps < NEAR_TIE
    diff = np.abs(ours - ref).max(axis=1)
    bound = 1e-5 * np.abs(ref).max()  # measured 1.6e-6 of max |logit|; the issue asks for at most 1e-4
    print(
        f"{recipe}/{layout}: max |diff| {diff[~ties].max():.3g} (bound {bound:.3g}), "
        f"near-tie positions {int(ties.sum())}/{len(TOKENS)}, smallest gap {gaps.min():.3g}"
    )
    assert int(ties.sum()) <= 1
    assert (ours[~ties].argmax(-1) == ref[~ties].argmax(-1)).all()
    assert diff[~ties].max() <= bound


@pytest.mark.parametrize("layout", ["per-expert", "fused"])
def test_reference_forward_matches_transformers_and_llama_cpp(ckpts, tmp_path, layout):
    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.model import forward
    from exaone_gguf.model.source import forward_source

    ckpt = ckpts[("k-exaone", layout)]
    ours = forward(load_checkpoint(ckpt), TOKENS)
    ref, gaps = transformers_run(ckpt, TOKENS)
    # the source's own forward (HF names and config keys, no tensor table) agrees with transformers as closely
    source = forward_source(ckpt, TOKENS)
    d_src = np.abs(source - ref).max(axis=1)[~(gaps < NEAR_TIE)].max() / np.abs(ref).max()
    print(f"source forward/{layout}: vs transformers {d_src:.3g} of max |logit|")
    assert d_src <= 1e-5
    gguf = tmp_path / "m.gguf"
    convert(ckpt, gguf, ConvertOptions(outtype="f32"))
    lcpp = llama_cpp_logits(gguf, TOKENS)
    ties = gaps < NEAR_TIE
    scale = np.abs(ref).max()
    d_hf = np.abs(ours - ref).max(axis=1)[~ties].max() / scale
    d_lc = np.abs(ours - lcpp).max(axis=1)[~ties].max() / scale
    print(f"reference/{layout}: vs transformers {d_hf:.3g}, vs llama.cpp {d_lc:.3g} of max |logit|")
    assert (ours[~ties].argmax(-1) == ref[~ties].argmax(-1)).all()
    assert d_hf <= 1e-5 and d_lc <= 1e-5


def test_tokenizer_parity_with_the_pre_tokenizer_regex(ckpts, tmp_path):
    """llama.cpp's `exaone-moe` pre-tokenizer gives the tokens of the `tokenizers` library running the regex."""
    from llama_cpp import Llama
    from tokenizers import Tokenizer

    from exaone_gguf.gguf_io import read_gguf
    from exaone_gguf.validate.tokenizer_check import TOKENIZER_CORPUS

    ckpt = ckpts[("k-exaone", "per-expert")]
    gguf = tmp_path / "m.gguf"
    convert(ckpt, gguf, ConvertOptions(outtype="bf16"))
    assert read_gguf(gguf).get("tokenizer.ggml.pre") == "exaone-moe"
    ref = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    texts = [*TOKENIZER_CORPUS, "it's I'LL we've 3.14159 a\r\nb  \n\n  c/d?! 한국어abc", "<|user|>\nhi<|endofturn|>\n"]
    for text in texts:
        want = ref.encode(text, add_special_tokens=False).ids
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == want, text
    llm.close()


def test_make_tiny_fused_variant_matches_transformers(tmp_path):
    """make-tiny k-exaone-fused: transformers' fused expert tensors as the source, converted and run."""
    ckpt = make_tiny("k-exaone-fused", tmp_path / "ckpt")
    gguf = tmp_path / "m.gguf"
    convert(ckpt, gguf, ConvertOptions(outtype="f32"))
    ours = llama_cpp_logits(gguf, TOKENS)
    ref, gaps = transformers_run(ckpt, TOKENS)
    ties = gaps < NEAR_TIE
    print(f"k-exaone-fused: max |diff| {np.abs(ours - ref)[~ties].max():.3g}, near-tie positions {int(ties.sum())}")
    assert int(ties.sum()) <= 1
    assert (ours[~ties].argmax(-1) == ref[~ties].argmax(-1)).all()
    assert np.abs(ours - ref)[~ties].max() <= 1e-5 * np.abs(ref).max()
