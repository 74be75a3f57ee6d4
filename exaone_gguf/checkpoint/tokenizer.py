"""Tokenizer files -> one TokenizerData: tokens by id, merges, added tokens, special ids, pre-tokenizer kind.

Reads `tokenizer.json` (fast tokenizer) or `vocab.json` + `merges.txt` (+ `tokenizer_config.json`), the way
transformers does, and can rebuild a `tokenizers.Tokenizer` as the reference for tokenization checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exaone_gguf.errors import InputError

# GGUF token types (llama.cpp llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


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
    pre: str  # "exaone" (digits split one by one) or "exaone4" (GPT-2 regex)
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
            [HFAdded(a.content, special=a.special, normalized=False) for a in sorted(self.added.values(), key=lambda a: a.id)]
        )
        return tok


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid UTF-8 JSON ({e}); restore the original file.") from None


def _token_content(v: Any) -> str | None:
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def _detect_pre(pre_tokenizer: Any) -> str:
    """`exaone` when the pre-tokenizer splits digits one by one (EXAONE 3.x), else the GPT-2 regex (`exaone4`)."""

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

    return "exaone" if walk(pre_tokenizer) else "exaone4"


def load_tokenizer(directory: Path) -> TokenizerData:
    directory = Path(directory)
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
        vocab = model["vocab"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        for a in tj.get("added_tokens", []):
            added[int(a["id"])] = AddedToken(int(a["id"]), a["content"], bool(a.get("special", False)))
        pre = _detect_pre(tj.get("pre_tokenizer"))
        source = str(tj_path)
    elif vocab_path.exists() and merges_path.exists():
        vocab = _load_json(vocab_path)
        if not isinstance(vocab, dict):
            raise InputError(f"{vocab_path}: must map token strings to ids; restore the original file.")
        lines = merges_path.read_text(encoding="utf-8").split("\n")
        merges = [ln for ln in lines if ln and not ln.startswith("#version")]
        pre = "exaone4"  # the slow GPT2Tokenizer always uses the GPT-2 regex
        source = f"{vocab_path} + {merges_path}"
    else:
        missing = [p.name for p in (tj_path, vocab_path, merges_path) if not p.exists()]
        raise InputError(
            f"{directory}: no tokenizer found (missing {', '.join(missing)}); "
            "add tokenizer.json, or vocab.json and merges.txt."
        )
    for key, a in (cfg.get("added_tokens_decoder") or {}).items():
        added[int(key)] = AddedToken(int(key), a["content"], bool(a.get("special", False)))

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
        template = jinja.read_text(encoding="utf-8")
    elif isinstance(cfg.get("chat_template"), str):
        template = cfg["chat_template"]
    elif isinstance(cfg.get("chat_template"), list):  # [{name, template}]: the default one
        for t in cfg["chat_template"]:
            if isinstance(t, dict) and t.get("name") == "default":
                template = t.get("template")

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
