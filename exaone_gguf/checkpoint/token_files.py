"""What both tokenizer readers (tokenizer.py for BPE, sentencepiece.py for SentencePiece) share: the GGUF token
types and the JSON helpers. Its own module so that tokenizer.py can pick the reader at module level without an
import cycle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exaone_gguf.errors import InputError

# GGUF token types (llama.cpp llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid UTF-8 JSON ({e}); restore the original file.") from None


def token_content(v: Any) -> str | None:
    """A special token given as a string or as {"content": ...} in tokenizer_config.json."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None
