"""Tokenizer files -> one TokenizerData: tokens by id, merges, added tokens, special ids, pre-tokenizer kind.

Reads `tokenizer.json` (fast tokenizer) or `vocab.json` + `merges.txt` (+ `tokenizer_config.json`), the way
transformers does, and can rebuild a `tokenizers.Tokenizer` as the reference for tokenization checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exaone_gguf.checkpoint.sentencepiece import load_sentencepiece
from exaone_gguf.checkpoint.spec import PreTokenizers
from exaone_gguf.checkpoint.token_files import CONTROL, NORMAL, UNUSED, USER_DEFINED
from exaone_gguf.checkpoint.token_files import load_json as _load_json
from exaone_gguf.checkpoint.token_files import token_content as _token_content
from exaone_gguf.errors import InputError


@dataclass
class AddedToken:
    id: int
    content: str
    special: bool


@dataclass
class TokenizerData:
    vocab: dict[str, int]
    merges: list[str]  # "left right", in rank order
    added: dict[int, AddedToken]
    pre: str  # llama.cpp's pre-tokenizer name, as the checkpoint's family names it (checkpoint.spec.PreTokenizers)
    bos_token_id: int | None
    eos_token_id: int | None
    unk_token_id: int | None
    pad_token_id: int | None
    add_bos_token: bool | None
    add_eos_token: bool | None
    chat_template: str | None
    source: str  # which files it came from, for messages
    tokenizer_json: dict[str, Any] | None = field(default=None, repr=False)

    def token_list(self, vocab_size: int) -> tuple[list[str], list[int]]:
        """Tokens and GGUF token types for ids 0..vocab_size-1; ids the tokenizer lacks become [PAD{i}]."""
        by_id: dict[int, str] = {i: t for t, i in self.vocab.items()}
        for i, a in self.added.items():
            by_id[i] = a.content
        if by_id and max(by_id) >= vocab_size:
            raise InputError(
                f"{self.source}: the tokenizer has token id {max(by_id)} but config.json says vocab_size "
                f"{vocab_size}; the tokenizer and config do not belong together."
            )
        tokens, types = [], []
        for i in range(vocab_size):
            if i not in by_id:
                tokens.append(f"[PAD{i}]")
                types.append(UNUSED)
            elif i in self.added:
                tokens.append(by_id[i])
                types.append(CONTROL if self.added[i].special else USER_DEFINED)
            else:
                tokens.append(by_id[i])
                types.append(NORMAL)
        return tokens, types

    def build_reference(self):  # -> tokenizers.Tokenizer
        """The `tokenizers` library's tokenizer for these files (the reference for tokenization checks)."""
        from tokenizers import AddedToken as HFAdded
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        if self.tokenizer_json is not None:
            return Tokenizer.from_str(json.dumps(self.tokenizer_json))
        merges = [tuple(m.split(" ", 1)) for m in self.merges]
        tok = Tokenizer(models.BPE(vocab=dict(self.vocab), merges=merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_tokens(
            [
                HFAdded(a.content, special=a.special, normalized=False)
                for a in sorted(self.added.values(), key=lambda a: a.id)
            ]
        )
        return tok


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path}: not valid UTF-8 ({e.reason} at byte {e.start}); restore the original file."
        ) from None


def _check_vocab(vocab: dict, source: Path) -> dict[str, int]:
    """Every entry is a string token with a non-negative integer id (a hostile file may hold anything)."""
    for token, i in vocab.items():
        if type(i) is not int or i < 0:
            raise InputError(
                f"{source}: token {token!r} has id {i!r}, not a non-negative integer; restore the original file."
            )
    return vocab


def _merges(raw: Any, source: Path) -> list[str]:
    """tokenizer.json merges: "left right" strings or [left, right] pairs."""
    if not isinstance(raw, list):
        raise InputError(f"{source}: 'merges' is not a list; restore the original file.")
    out = []
    for i, m in enumerate(raw):
        if isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m):
            m = " ".join(m)
        if not isinstance(m, str):
            raise InputError(
                f"{source}: merge {m!r} (entry {i}) is not 'left right' or [left, right]; restore the original file."
            )
        out.append(m)
    return out


def _added_token(i: Any, a: Any, source: Path) -> AddedToken:
    try:
        if isinstance(i, bool) or not isinstance(a, dict) or not isinstance(a["content"], str):
            raise TypeError
        i = int(i)  # added_tokens_decoder keys are id strings
        if i < 0:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"{source}: added token {str(a)[:80]} (id {i!r}) needs an integer 'id' and a string 'content'; "
            "restore the original file."
        ) from None
    return AddedToken(i, a["content"], bool(a.get("special", False)))


def _splits_digits(pre_tokenizer: Any) -> bool:
    """True when the pre-tokenizer splits digits one by one (EXAONE 3.x), False for the GPT-2 regex."""

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "Digits" and node.get("individual_digits"):
                return True
            if node.get("type") == "Split":
                pat = node.get("pattern", {})
                regex = pat.get("Regex", "") if isinstance(pat, dict) else ""
                if regex in (r"\p{N}", r"\d", "[0-9]"):
                    return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(pre_tokenizer)


def _is_sentencepiece(directory: Path) -> bool:
    """Llama-family checkpoints: tokenizer.model, unless a tokenizer.json beside it is byte-level BPE."""
    if not (directory / "tokenizer.model").exists():
        return False
    tj_path = directory / "tokenizer.json"
    if not tj_path.exists():
        return True
    tj = _load_json(tj_path)
    model = tj.get("model") if isinstance(tj, dict) else None
    return isinstance(model, dict) and (model.get("type") == "Unigram" or bool(model.get("byte_fallback")))


def load_tokenizer(directory: Path, pre_names: PreTokenizers | None):  # -> TokenizerData | SentencePieceData
    """`pre_names`: the family's pre-tokenizer names (its ConfigReading's; None where it declares none)."""
    directory = Path(directory)
    if _is_sentencepiece(directory):
        return load_sentencepiece(directory)
    tj_path, vocab_path, merges_path = directory / "tokenizer.json", directory / "vocab.json", directory / "merges.txt"
    cfg_path = directory / "tokenizer_config.json"
    cfg = _load_json(cfg_path) if cfg_path.exists() else {}
    if not isinstance(cfg, dict):
        raise InputError(f"{cfg_path}: top level must be a JSON object; restore the original file.")

    added: dict[int, AddedToken] = {}
    tj = None
    if tj_path.exists():
        tj = _load_json(tj_path)
        model = tj.get("model") if isinstance(tj, dict) else None
        if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise InputError(f"{tj_path}: only byte-level BPE tokenizers are supported for this family.")
        vocab = _check_vocab(model["vocab"], tj_path)
        merges = _merges(model.get("merges", []), tj_path)
        added_list = tj.get("added_tokens") or []
        for a in added_list if isinstance(added_list, list) else [added_list]:
            t = _added_token(a.get("id") if isinstance(a, dict) else None, a, tj_path)
            added[t.id] = t
        split_digits = _splits_digits(tj.get("pre_tokenizer"))
        source = str(tj_path)
    elif vocab_path.exists() and merges_path.exists():
        vocab = _load_json(vocab_path)
        if not isinstance(vocab, dict):
            raise InputError(f"{vocab_path}: must map token strings to ids; restore the original file.")
        _check_vocab(vocab, vocab_path)
        lines = _read_text(merges_path).split("\n")
        merges = [ln for ln in lines if ln and not ln.startswith("#version")]
        split_digits = False  # the slow GPT2Tokenizer always uses the GPT-2 regex
        source = f"{vocab_path} + {merges_path}"
    else:
        missing = [p.name for p in (tj_path, vocab_path, merges_path) if not p.exists()]
        raise InputError(
            f"{directory}: no tokenizer found (missing {', '.join(missing)}); "
            "add tokenizer.json, or vocab.json and merges.txt."
        )
    decoder = cfg.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise InputError(f"{cfg_path}: 'added_tokens_decoder' must map ids to tokens; restore the original file.")
    for key, a in decoder.items():
        t = _added_token(key, a, cfg_path)
        added[t.id] = t

    def special_id(name: str) -> int | None:
        content = _token_content(cfg.get(name))
        if content is None:
            return None
        for a in added.values():
            if a.content == content:
                return a.id
        return vocab.get(content)

    template = None
    jinja = directory / "chat_template.jinja"
    if jinja.exists():
        template = _read_text(jinja)
    elif isinstance(cfg.get("chat_template"), str):
        template = cfg["chat_template"]
    elif isinstance(cfg.get("chat_template"), list):  # [{name, template}]: the default one
        for t in cfg["chat_template"]:
            if isinstance(t, dict) and t.get("name") == "default":
                template = t.get("template")

    if pre_names is None:
        raise InputError(
            f"{directory}: its model family declares no byte-level BPE pre-tokenizer; use the model's own tokenizer files."
        )
    pre = pre_names.split_digits if split_digits else pre_names.gpt2_regex
    return TokenizerData(
        vocab=vocab,
        merges=merges,
        added=added,
        pre=pre,
        bos_token_id=special_id("bos_token"),
        eos_token_id=special_id("eos_token"),
        unk_token_id=special_id("unk_token"),
        pad_token_id=special_id("pad_token"),
        add_bos_token=cfg.get("add_bos_token") if isinstance(cfg.get("add_bos_token"), bool) else None,
        add_eos_token=cfg.get("add_eos_token") if isinstance(cfg.get("add_eos_token"), bool) else None,
        chat_template=template,
        source=source,
        tokenizer_json=tj,
    )
