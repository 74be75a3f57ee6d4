"""make-tiny's EXAONE 4.5 tokenizer: K-EXAONE's (tiny/k_exaone.py: the family's pre-tokenizer regex, PAD 0 / BOS 1 /
<|endofturn|> 53) plus the vision tokens at the ids config.json names: <|image_pad|> 67 (image_token_id),
<|video_pad|> 68 (video_token_id), and the <vision> / </vision> brackets around them (ids 64 and 65 chosen here),
plus the family's extra files (preprocessor_config.json for the projector)."""

from __future__ import annotations

from pathlib import Path

from exaone_gguf.families import TinyTokenizer
from exaone_gguf.tiny import k_exaone

VISION_TOKENS = {64: "<vision>", 65: "</vision>", 67: "<|image_pad|>", 68: "<|video_pad|>"}


def added_tokens(eot: str) -> list[tuple[str, bool]]:
    """(content, special) for ids 0..71: K-EXAONE's 64, then the vision tokens."""
    out = k_exaone.added_tokens(eot)
    out += [(VISION_TOKENS.get(i, f"[extra_id_v{i}]"), True) for i in range(64, 72)]
    return out


def write_tokenizer(out_dir: Path, chat_template: str, tt: TinyTokenizer) -> int:
    return k_exaone.write_tokenizer(out_dir, chat_template, tt, added_tokens(tt.eot))
