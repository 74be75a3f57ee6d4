"""Tokenizer -> GGUF `tokenizer.*` keys (byte-level BPE as llama.cpp's `gpt2` model)."""

from __future__ import annotations

from gguf import GGUFValueType

from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.checkpoint.tokenizer import TokenizerData
from exaone_gguf.convert.writer import GGUFPlan
from exaone_gguf.errors import InputError


def special_ids(tok: TokenizerData, spec: ModelSpec) -> dict[str, int | None]:
    """BOS/EOS/UNK/PAD ids: the tokenizer config's tokens first, config.json's ids as the fallback."""
    return {
        "bos": tok.bos_token_id if tok.bos_token_id is not None else spec.bos_token_id,
        "eos": tok.eos_token_id if tok.eos_token_id is not None else spec.eos_token_id,
        "unk": tok.unk_token_id,
        "pad": tok.pad_token_id if tok.pad_token_id is not None else spec.pad_token_id,
    }


def add_vocab(plan: GGUFPlan, tok: TokenizerData, spec: ModelSpec) -> None:
    tokens, types = tok.token_list(spec.vocab_size)
    plan.add_string("tokenizer.ggml.model", "gpt2")
    plan.add_string("tokenizer.ggml.pre", tok.pre)
    plan.add_array("tokenizer.ggml.tokens", GGUFValueType.STRING, tokens)
    plan.add_array("tokenizer.ggml.token_type", GGUFValueType.INT32, types)
    plan.add_array("tokenizer.ggml.merges", GGUFValueType.STRING, tok.merges)
    for name, value in special_ids(tok, spec).items():
        if value is None:
            continue
        if not 0 <= value < spec.vocab_size:
            raise InputError(f"{tok.source}: {name} token id {value} is outside the vocabulary of {spec.vocab_size}.")
        key = "unknown" if name == "unk" else "padding" if name == "pad" else name
        plan.add_u32(f"tokenizer.ggml.{key}_token_id", value)
    # GPT2Tokenizer adds no BOS unless its config says so; write it explicitly so llama.cpp does the same.
    plan.add_bool("tokenizer.ggml.add_bos_token", bool(tok.add_bos_token))
    if tok.add_eos_token is not None:
        plan.add_bool("tokenizer.ggml.add_eos_token", tok.add_eos_token)
    if tok.chat_template:
        plan.add_string("tokenizer.chat_template", tok.chat_template)
