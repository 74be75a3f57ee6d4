"""make-tiny: small random checkpoints with each family's real tensor names, config keys and dtypes.

Weights are deterministic from a seed and scaled so that next-token distributions are peaked (quantization
error must show in the metrics). `--from-config` keeps every key of a real config.json and shrinks only the
sizes asked for (no size options = full size, for benchmarks).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.checkpoint.st_writer import TensorSource, write_checkpoint_weights
from exaone_gguf.elements import f32_to_bf16_bits
from exaone_gguf.errors import InputError
from exaone_gguf.families import Family, family_for, parse_config, tiny_recipe, tiny_recipes
from exaone_gguf.tiny.tokenizer import write_tokenizer_files

FAMILIES = tiny_recipes()  # every make-tiny family name the family modules declare
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def family_config(family: str) -> dict[str, Any]:
    """The config.json of a tiny model of `family` (sizes small, keys as in the real files)."""
    recipe, _ = tiny_recipe(family)
    cfg = recipe.config()
    if recipe.awq:
        from exaone_gguf.tiny.awq import awq_config

        cfg = awq_config(cfg, recipe.name)
    return cfg


def shrink_config(
    cfg: dict[str, Any],
    layers: int | None = None,
    hidden: int | None = None,
    heads: int | None = None,
    kv_heads: int | None = None,
    head_dim: int | None = None,
    intermediate: int | None = None,
) -> dict[str, Any]:
    """Shrink a real config's sizes, keeping every other key (and the sliding pattern's rhythm)."""
    cfg = json.loads(json.dumps(cfg))
    if isinstance(cfg.get("text_config"), dict):  # multimodal (EXAONE 4.5): the sizes are the text tower's
        sizes = dict(layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim)
        cfg["text_config"] = shrink_config(cfg["text_config"], intermediate=intermediate, **sizes)
        if isinstance(cfg.get("vision_config"), dict) and (intermediate or any(sizes.values())):
            cfg["vision_config"] = _shrink_vision(cfg["vision_config"], cfg["text_config"]["hidden_size"])
        return cfg
    layer_key = "num_layers" if "num_layers" in cfg else "num_hidden_layers"
    if layers:
        if isinstance(cfg.get("layer_types"), list) and cfg["layer_types"]:
            lt = cfg["layer_types"]
            cfg["layer_types"] = [lt[i % len(lt)] for i in range(layers)]
        cfg[layer_key] = layers
    old_heads = cfg.get("num_attention_heads", 1)
    old_dim = cfg.get("head_dim") or cfg["hidden_size"] // old_heads
    if head_dim:
        if "head_dim" in cfg:
            cfg["head_dim"] = head_dim
        old_dim = head_dim
    if hidden:
        cfg["hidden_size"] = hidden
        cfg["num_attention_heads"] = heads or max(1, hidden // old_dim)
    elif heads:
        cfg["num_attention_heads"] = heads
    if kv_heads:
        cfg["num_key_value_heads"] = kv_heads
    elif cfg["num_attention_heads"] != old_heads and "num_key_value_heads" in cfg:
        ratio = max(1, old_heads // cfg["num_key_value_heads"])
        n = cfg["num_attention_heads"]
        cfg["num_key_value_heads"] = max(1, n // ratio) if n % max(1, n // ratio) == 0 else n
    if intermediate:
        cfg["intermediate_size"] = intermediate
    return cfg


def _shrink_vision(vc: dict[str, Any], out_hidden: int) -> dict[str, Any]:
    """A vision tower (Qwen2-VL style) at tiny sizes: 4 blocks of width 64, 4 heads keeping the config's
    query/kv head ratio, full attention every other block (evenly spaced, as llama.cpp's n_wa_pattern needs),
    projecting to the shrunk text width; patch, merge and window geometry kept."""
    vc = dict(vc)
    heads = 4
    ratio = max(1, int(vc.get("num_heads", heads)) // int(vc.get("num_key_value_heads", vc.get("num_heads", heads))))
    vc.update(depth=4, hidden_size=64, intermediate_size=128, num_heads=heads, out_hidden_size=out_hidden)
    if "num_key_value_heads" in vc:
        vc["num_key_value_heads"] = max(1, heads // ratio)
    if "fullatt_block_indexes" in vc:
        vc["fullatt_block_indexes"] = [1, 3]
    return vc


# Sublayer outputs that feed the residual stream directly: scaled down (GPT-2 style, by 1/sqrt(2 * layers))
# so the network is well conditioned like a trained one, not chaotic: small weight errors then stay small
# and quantization metrics look like real models' (a chaotic random net turns Q8_0 rounding into top-1 flips).
_RESIDUAL_WRITERS = ("attn_output.weight", "ffn_down.weight", "ffn_down_exps.weight", "ffn_down_shexp.weight")
ROUTER_GAIN = 8.0
_POST_NORMS = ("post_attention_norm.weight", "post_ffw_norm.weight")


def _weights(spec: ModelSpec, seed: int, dtype: str) -> list[TensorSource]:
    """Random weights in the family's HF names; scales chosen so the logits are peaked and the net is tame."""
    fam = family_for(spec)
    sources, seen = [], set()
    for idx, m in enumerate(fam.tensor_map(spec)):
        # every source tensor the mapping reads (stacked experts, a fused tensor), each written once (copies)
        for j, (name, shape) in enumerate(m.sources().items()):
            if name not in seen:
                seen.add(name)
                sources.append(_weight(spec, fam, m.gguf_name, name, shape, seed, (idx, j) if j else (idx,), dtype))
    # tensors for another file (EXAONE 4.5's vision tower): biases near 0, gains near 1, weights by fan-in
    for k, (name, shape) in enumerate((fam.left_out(spec) if fam.left_out else {}).items()):
        if len(shape) > 1:
            mean, std = 0.0, 1.0 / np.sqrt(np.prod(shape[1:]))
        else:
            mean, std = (1.0, 0.1) if name.endswith(".weight") else (0.0, 0.02)
        sources.append(TensorSource(name, dtype, shape, _random_rows(seed, (1 << 20, k), shape, mean, std, dtype)))
    return sources


def _weight(
    spec: ModelSpec, fam: Family, gguf_name: str, name: str, shape: tuple[int, ...], seed: int, key: tuple, dtype: str
) -> TensorSource:
    emb_std = 10.0 / np.sqrt(spec.hidden_size)  # logit std ~10 after the final norm
    update = 0.2 * np.sqrt(8 / (2 * spec.num_layers))  # size of each sublayer's residual update
    if gguf_name.endswith(_POST_NORMS):  # EXAONE 4: the post-norm gain sets the update size
        mean, std = update, 0.1 * update
    elif gguf_name == "output_norm.weight" and spec.tie_word_embeddings:
        # Tied: logits are E·(g*norm(e_t + updates)); gains of random sign keep the current token's own
        # row from always winning (e_t·(g*e_t) has mean 0), so the output depends on more than the input.
        return TensorSource(name, dtype, shape, _signed_gains(seed, key, shape[0], dtype))
    elif len(shape) == 1:
        mean, std = 1.0, 0.1  # norm gains near 1, distinct per tensor so swaps are visible
    elif gguf_name in ("token_embd.weight", "output.weight"):
        mean, std = 0.0, emb_std
    elif gguf_name.endswith("ffn_gate_inp.weight"):  # MoE router: decisive choices (rare near-ties), as trained
        mean, std = 0.0, ROUTER_GAIN / np.sqrt(shape[-1])
    elif gguf_name.endswith(_RESIDUAL_WRITERS) and fam.tiny_tokenizer.scale_residual:
        mean, std = 0.0, update / np.sqrt(shape[-1])
    else:
        mean, std = 0.0, 1.0 / np.sqrt(shape[-1])
    rows = _vocab_row_scale(shape[0]) if gguf_name in ("token_embd.weight", "output.weight") else None
    return TensorSource(name, dtype, shape, _random_rows(seed, key, shape, mean, std, dtype, rows))


def _signed_gains(seed: int, key: tuple, n: int, dtype: str):
    def produce():
        rng = np.random.default_rng([seed, *key])
        g = (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)) * rng.choice(np.float32([-1, 1]), n)
        yield f32_to_bf16_bits(g) if dtype == "BF16" else g.astype(np.float16 if dtype == "F16" else np.float32)

    return produce


FREQUENT = (362, 362 + 2048)  # ids of the "frequent" tokens: the bytes and first merges of a byte-level BPE


def _vocab_row_scale(n_rows: int) -> np.ndarray:
    """Zipf-like output rows: frequent tokens get 4x the norm of the rest, so each context has a clear
    winner among them (a peaked distribution with a real margin) while the context still picks which."""
    scale = np.full(n_rows, 0.25, dtype=np.float32)
    scale[FREQUENT[0] : FREQUENT[1]] = 1.0
    return scale


def _random_rows(seed: int, key: tuple, shape: tuple[int, ...], mean: float, std: float, dtype: str, row_scale=None):
    def produce():
        rng = np.random.default_rng([seed, *key])
        rows = shape[0] if len(shape) > 1 else 1
        row_len = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        step = max(1, (8 << 20) // (4 * row_len))
        for start in range(0, rows, step):
            n = min(step, rows - start)
            x = rng.standard_normal((n, row_len), dtype=np.float32) * np.float32(std) + np.float32(mean)
            if row_scale is not None:
                x *= row_scale[start : start + n, None]
            yield f32_to_bf16_bits(x) if dtype == "BF16" else x.astype(np.float16 if dtype == "F16" else np.float32)

    return produce


def _chat_template(fam: Family, family: str | None) -> str | None:
    """The recipe's template, or for --from-config the template of the family's default recipe."""
    name = family or fam.tiny_tokenizer.default_template
    return tiny_recipe(name)[0].chat_template if name else None


def make_tiny(
    family: str | None,
    out_dir: Path | str,
    seed: int = 0,
    tokenizer_dir: Path | str | None = None,
    from_config: Path | str | None = None,
    force: bool = False,
    **sizes: int | None,
) -> Path:
    """Write a tiny random checkpoint of `family` (or shaped by `from_config`) into `out_dir`."""
    out = Path(out_dir)
    if from_config is not None:
        from exaone_gguf.checkpoint.spec import read_config

        cfg = shrink_config(read_config(Path(from_config)), **sizes)
    else:
        if family is None:
            raise InputError("make-tiny: give a FAMILY or --from-config CONFIG.")
        cfg = shrink_config(family_config(family), **sizes)
    spec = parse_config(cfg, Path(from_config) if from_config else Path(f"<{family}>/config.json"))
    fam = family_for(spec)  # refuses families we cannot write
    if family is not None and tiny_recipe(family)[0].layout is not None:
        spec = tiny_recipe(family)[0].layout(spec)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise InputError(f"{out}: directory is not empty; choose a new directory or pass --force.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    dtype = {"float32": "F32", "float16": "F16"}.get(str(spec.torch_dtype), "BF16")
    from exaone_gguf.tiny.awq import awq_sources

    write_checkpoint_weights(out, awq_sources(cfg, _weights(spec, seed, dtype)))  # AWQ configs: packed layers
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"bos_token_id": spec.bos_token_id, "eos_token_id": spec.eos_token_id, "pad_token_id": spec.pad_token_id}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    (out / "README.md").write_text(
        "---\nlicense: apache-2.0\nlanguage:\n- en\n- ko\ntags:\n- exaone-gguf-tiny\n---\n\n"
        f"# Tiny random {spec.architecture}\n\nRandom weights made by `exaone-gguf make-tiny` (seed {seed}) for tests.\n"
    )
    if tokenizer_dir is not None:
        src = Path(tokenizer_dir)
        copied = [f for f in TOKENIZER_FILES if (src / f).exists()]
        if not copied:
            raise InputError(f"{src}: no tokenizer files found ({', '.join(TOKENIZER_FILES[:3])}, ...).")
        for f in copied:
            shutil.copyfile(src / f, out / f)
    elif fam.tiny_tokenizer.sentencepiece:
        from exaone_gguf.tiny.llama import write_spm_tokenizer

        write_spm_tokenizer(out)
    elif fam.tiny_tokenizer.writer is not None:
        import importlib

        importlib.import_module(f"exaone_gguf.tiny.{fam.tiny_tokenizer.writer}").write_tokenizer(
            out, _chat_template(fam, family), fam.tiny_tokenizer
        )
    else:
        template = _chat_template(fam, family)
        if template is None:
            raise InputError(f"make-tiny: model family {fam.name} declares no chat template for its tiny tokenizer.")
        write_tokenizer_files(
            out,
            split_digits=fam.tiny_tokenizer.split_digits,
            chat_template=template,
            template_in_jinja=fam.tiny_tokenizer.template_in_jinja,
        )
    return out
