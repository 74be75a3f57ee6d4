"""SentencePiece tokenizers (Llama family: KULLM3, SOLAR) -> the tokens, scores and types llama.cpp's
`llama` vocabulary needs, and `sentencepiece` itself as the reference for tokenization checks.

Follows llama.cpp's converter (`_create_vocab_sentencepiece`): pieces with their scores and types from
`tokenizer.model`; ids past the model up to config.json's vocab_size are `[PAD{i}]` (unused); entries of
`added_tokens.json` and `tokenizer_config.json`'s `added_tokens_decoder` override their ids (control when
special, user-defined otherwise, score -1000).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exaone_gguf.checkpoint.token_files import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    load_json,
    token_content,
)
from exaone_gguf.errors import InputError

PAD_SCORE = -10000.0
ADDED_SCORE = -1000.0


@dataclass
class _Encoding:
    ids: list[int]


class SentencePieceReference:
    """`sentencepiece` with the `tokenizers`-like call the tokenizer check uses: encode(text).ids."""

    def __init__(self, model: bytes) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=model)

    def encode(self, text: str, add_special_tokens: bool = False) -> _Encoding:
        ids = self.sp.encode(text)
        return _Encoding(([self.sp.bos_id()] if add_special_tokens and self.sp.bos_id() >= 0 else []) + ids)


@dataclass
class SentencePieceData:
    """Same reading interface as TokenizerData (token_list, special ids, template, build_reference)."""

    pieces: list[tuple[str, float, int]]  # (piece, score, GGUF type) for sentencepiece ids 0..n-1
    added: dict[int, tuple[str, bool]]  # id -> (content, special), from added_tokens.json / tokenizer_config
    model_bytes: bytes = field(repr=False)
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    unk_token_id: int | None = None
    pad_token_id: int | None = None
    add_bos_token: bool | None = True
    add_eos_token: bool | None = False
    chat_template: str | None = None
    source: str = ""
    pre: str = "default"  # llama.cpp ignores pre-tokenizers for SentencePiece vocabularies
    kind: str = "spm"

    def vocab_entries(self, vocab_size: int) -> tuple[list[str], list[float], list[int]]:
        """Tokens, scores and GGUF types for ids 0..vocab_size-1, as llama.cpp's converter builds them."""
        if len(self.pieces) > vocab_size:
            raise InputError(
                f"{self.source}: the tokenizer has {len(self.pieces)} pieces but config.json says vocab_size "
                f"{vocab_size}; the tokenizer and config do not belong together."
            )
        tokens = [f"[PAD{i}]" for i in range(vocab_size)]
        scores = [PAD_SCORE] * vocab_size
        types = [UNUSED] * vocab_size
        for i, (piece, score, kind) in enumerate(self.pieces):
            tokens[i], scores[i], types[i] = piece, score, kind
        for i, (content, special) in sorted(self.added.items()):
            if i >= vocab_size:
                raise InputError(f"{self.source}: added token {content!r} has id {i}, past vocab_size {vocab_size}.")
            tokens[i] = content if special else content.replace("\u2581", " ")
            scores[i], types[i] = ADDED_SCORE, CONTROL if special else USER_DEFINED
        return tokens, scores, types

    def token_list(self, vocab_size: int) -> tuple[list[str], list[int]]:
        tokens, _, types = self.vocab_entries(vocab_size)
        return tokens, types

    def build_reference(self) -> SentencePieceReference:
        return SentencePieceReference(self.model_bytes)


def _piece_type(sp, i: int) -> int:
    if sp.is_unknown(i):
        return UNKNOWN
    if sp.is_control(i):
        return CONTROL
    if sp.is_unused(i):
        return UNUSED
    if sp.is_byte(i):
        return BYTE
    return NORMAL


def load_sentencepiece(directory: Path) -> SentencePieceData:
    """Read tokenizer.model (+ added_tokens.json, tokenizer_config.json) from a checkpoint directory."""
    import sentencepiece as spm

    directory = Path(directory)
    model_path = directory / "tokenizer.model"
    model = model_path.read_bytes()
    sp = spm.SentencePieceProcessor()
    try:
        sp.load_from_serialized_proto(model)
    except (RuntimeError, OSError) as e:
        raise InputError(
            f"{model_path}: not a SentencePiece model ({str(e)[:80]}); restore the original file."
        ) from None
    pieces = [(sp.id_to_piece(i), float(sp.get_score(i)), _piece_type(sp, i)) for i in range(sp.get_piece_size())]

    added: dict[int, tuple[str, bool]] = {}
    added_path = directory / "added_tokens.json"
    if added_path.exists():
        data = load_json(added_path)
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise InputError(f"{added_path}: must map token strings to integer ids; restore the original file.")
        added.update({i: (t, False) for t, i in data.items()})
    cfg_path = directory / "tokenizer_config.json"
    cfg: dict[str, Any] = load_json(cfg_path) if cfg_path.exists() else {}
    if not isinstance(cfg, dict):
        raise InputError(f"{cfg_path}: top level must be a JSON object; restore the original file.")
    for key, a in (cfg.get("added_tokens_decoder") or {}).items():
        if not isinstance(a, dict) or not isinstance(a.get("content"), str):
            raise InputError(f"{cfg_path}: added_tokens_decoder entry {key!r} has no 'content'; restore the file.")
        added[int(key)] = (a["content"], bool(a.get("special", False)))

    by_text = {p: i for i, (p, _, _) in enumerate(pieces)}
    by_text.update({c: i for i, (c, _) in added.items()})

    def special_id(name: str, fallback: int) -> int | None:
        content = token_content(cfg.get(name))
        if content is not None and content in by_text:
            return by_text[content]
        return fallback if fallback >= 0 and content is None and name != "pad_token" else None

    template = None
    jinja = directory / "chat_template.jinja"
    if jinja.exists():
        template = jinja.read_text(encoding="utf-8")
    elif isinstance(cfg.get("chat_template"), str):
        template = cfg["chat_template"]
    bool_or = lambda key, default: cfg[key] if isinstance(cfg.get(key), bool) else default  # noqa: E731
    return SentencePieceData(
        pieces=pieces,
        added=added,
        model_bytes=model,
        bos_token_id=special_id("bos_token", sp.bos_id()),
        eos_token_id=special_id("eos_token", sp.eos_id()),
        unk_token_id=special_id("unk_token", sp.unk_id()),
        pad_token_id=special_id("pad_token", sp.pad_id()),
        add_bos_token=bool_or("add_bos_token", True),  # LlamaTokenizer's defaults
        add_eos_token=bool_or("add_eos_token", False),
        chat_template=template,
        source=str(model_path),
    )


__all__ = ["SentencePieceData", "SentencePieceReference", "load_sentencepiece"]
