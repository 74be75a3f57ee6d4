"""Tokenizer -> GGUF `tokenizer.*` keys (byte-level BPE as llama.cpp's `gpt2` model)."""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFValueType

from exaone_gguf import chat_template
from exaone_gguf.checkpoint.spec import ModelSpec
from exaone_gguf.checkpoint.tokenizer import TokenizerData
from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.writer import GGUFPlan


def special_ids(tok: TokenizerData, spec: ModelSpec) -> dict[str, int | None]:
    """BOS/EOS/UNK/PAD ids: the tokenizer config's tokens first, config.json's ids as the fallback."""
    return {
        "bos": tok.bos_token_id if tok.bos_token_id is not None else spec.bos_token_id,
        "eos": tok.eos_token_id if tok.eos_token_id is not None else spec.eos_token_id,
        "unk": tok.unk_token_id,
        "pad": tok.pad_token_id if tok.pad_token_id is not None else spec.pad_token_id,
    }


def add_spm_vocab(plan: GGUFPlan, tok, spec: ModelSpec) -> None:
    """SentencePiece -> llama.cpp's `llama` vocabulary: tokens, scores (merge priorities) and types."""
    tokens, scores, types = tok.vocab_entries(spec.vocab_size)
    plan.add_string("tokenizer.ggml.model", "llama")
    plan.add_string("tokenizer.ggml.pre", tok.pre)
    plan.add_array("tokenizer.ggml.tokens", GGUFValueType.STRING, tokens)
    plan.add_array("tokenizer.ggml.scores", GGUFValueType.FLOAT32, scores)
    plan.add_array("tokenizer.ggml.token_type", GGUFValueType.INT32, types)


def add_vocab(plan: GGUFPlan, tok: TokenizerData, spec: ModelSpec) -> None:
    if getattr(tok, "kind", None) == "spm":
        add_spm_vocab(plan, tok, spec)
        _add_special(plan, tok, spec)
        return
    tokens, types = tok.token_list(spec.vocab_size)
    plan.add_string("tokenizer.ggml.model", "gpt2")
    plan.add_string("tokenizer.ggml.pre", tok.pre)
    plan.add_array("tokenizer.ggml.tokens", GGUFValueType.STRING, tokens)
    plan.add_array("tokenizer.ggml.token_type", GGUFValueType.INT32, types)
    plan.add_array("tokenizer.ggml.merges", GGUFValueType.STRING, tok.merges)
    _add_special(plan, tok, spec)


def _add_special(plan: GGUFPlan, tok, spec: ModelSpec) -> None:
    """Special ids, BOS/EOS policy and the chat template (every vocabulary kind)."""
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
        check_chat_template(tok.chat_template, template_source(tok))
        plan.add_string("tokenizer.chat_template", tok.chat_template)


def template_source(tok) -> str:
    """The file the loaders took the template from: chat_template.jinja wins over tokenizer_config.json."""
    directory = Path(str(tok.source).split(" + ")[0]).parent
    jinja = directory / "chat_template.jinja"
    return str(jinja if jinja.exists() else directory / "tokenizer_config.json")


def check_chat_template(template: str, source: str) -> None:
    """Refuse a chat template that would be shipped broken or hostile (CVE-2024-34359 was a template):
    it must compile, must not name a private attribute anywhere (an escape attempt may sit in a branch no
    test conversation takes), and must render a one-message chat in the bounded sandbox; one child does all three."""
    chat_template.check_and_render(template, [{"role": "user", "content": "Hello"}], source)
