"""make-tiny's K-EXAONE tokenizer: byte-level BPE behind K-EXAONE's own pre-tokenizer regex (llama.cpp's
`exaone-moe`), with the special tokens at K-EXAONE's ids ([PAD] 0, [BOS] 1, <|endofturn|> 53 = EOS).

Only PAD 0 / BOS 1 / EOS 53 are K-EXAONE's published ids; the other added tokens (role markers, tool and think
tags) sit in the ids before 53 in an order chosen here. The BPE is trained on the spot (tiny/tokenizer.py's text).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from exaone_gguf.families import TinyTokenizer
from exaone_gguf.tiny.tokenizer import N_MERGE_VOCAB, TRAINING_TEXT, with_added_tokens

_ROLES = ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|tool_declare|>"]
_TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_result>", "</tool_result>"]


def added_tokens(eot: str) -> list[tuple[str, bool]]:
    """(content, special) for ids 0..63; the end-of-turn token `eot` at 53."""
    out = [("[PAD]", True), ("[BOS]", True), ("[EOS]", True), ("[UNK]", True), ("<|endoftext|>", True)]
    out += [(f"[unused{i}]", True) for i in range(53 - len(out) - len(_ROLES) - len(_TAGS))]
    out += [(t, False) for t in _TAGS] + [(t, True) for t in _ROLES] + [(eot, True)]
    out += [(f"[extra_id_{i}]", True) for i in range(64 - len(out))]
    assert len(out) == 64 and out[53][0] == eot
    return out


def pre_tokenizer(regex: str):
    """K-EXAONE's pre-tokenizer as the tokenizers library runs it: the regex split, then byte-level bytes."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def write_tokenizer(
    out_dir: Path, chat_template: str, tt: TinyTokenizer, added: list[tuple[str, bool]] | None = None
) -> int:
    """tokenizer.json + tokenizer_config.json + chat_template.jinja (+ the family's extra files); returns the
    vocabulary size. `tt`: the family's tiny tokenizer (end-of-turn token, pre-tokenizer regex); `added`: the added
    tokens in id order (default K-EXAONE's, `added_tokens(tt.eot)`)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(tt.pre_regex)
    trainer = trainers.BpeTrainer(
        vocab_size=N_MERGE_VOCAB,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    added = added if added is not None else added_tokens(tt.eot)
    tj = with_added_tokens(json.loads(tok.to_str()), added)
    vocab = tj["model"]["vocab"]
    out_dir = Path(out_dir)
    (out_dir / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": c, "special": s} for i, (c, s) in enumerate(added)},
        "bos_token": "[BOS]",
        "clean_up_tokenization_spaces": False,
        "eos_token": tt.eot,
        "model_max_length": 262144,
        "pad_token": "[PAD]",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "[UNK]",
    }
    (out_dir / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    for name, data in tt.files:
        (out_dir / name).write_text(json.dumps(data, indent=2) + "\n")
    return len(vocab)
