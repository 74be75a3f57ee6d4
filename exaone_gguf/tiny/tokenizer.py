"""The package's own small byte-level BPE tokenizer with EXAONE's special-token layout at the same ids.

Ids 0-361 mirror EXAONE 4.0's added tokens ([PAD] 0, [BOS] 1, [UNK] 3, role markers 357-360, [|endofturn|] 361,
<think>/<tool_call> non-special); the BPE itself is trained on the spot on a small bilingual text, so no
third-party vocabulary is shipped. The converter pads the vocabulary to config.json's 102400 entries.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

N_MERGE_VOCAB = 3000  # trained BPE size (bytes + merges), placed after the 362 added tokens

_CODE_TAGS = [
    "<|c|>",
    "<|c++|>",
    "<|python|>",
    "<|javascript|>",
    "<|markdown|>",
    "<|html|>",
    "<|css|>",
    "<|vue|>",
    "<|java|>",
]
_PI = ["URL", "EMAIL", "ACCOUNT_NUM", "PHONE_NUM", "BUSINESS_NUM", "ANNON", "KEY", "ID", "IP_ADDRESS", "USER"]
_TOOL = ["</tool_call>", "<tool_call>", "</tool_result>", "<tool_result>", "</think>", "<think>"]
_ROLES = ["[|system|]", "[|tool|]", "[|assistant|]", "[|user|]", "[|endofturn|]"]


def added_tokens() -> list[tuple[str, bool]]:
    """(content, special) for ids 0..361, in id order."""
    out = [("[PAD]", True), ("[BOS]", True), ("[EOS]", True), ("[UNK]", True)]
    out += [(" " * n, False) for n in range(31, 1, -1)]  # ids 4-33: runs of spaces
    out += [("\t" * n, False) for n in range(9, 1, -1)]  # ids 34-41: runs of tabs
    out += [("<|endoftext|>", True)] + [(t, True) for t in _CODE_TAGS]
    out += [(f"PI:{p}", True) for p in _PI]
    out += [(f"[unused{i}]", True) for i in range(100)]
    out += [(f"[extra_id_{i}]", True) for i in range(189)]
    out += [(t, False) for t in _TOOL] + [(t, True) for t in _ROLES]
    assert len(out) == 362 and out[361][0] == "[|endofturn|]"
    return out


TRAINING_TEXT = """\
안녕하세요. 저는 작은 언어 모델입니다. 오늘 날씨가 맑고 따뜻합니다. 서울에서 부산까지 기차로 두 시간 반이 걸립니다.
한국어와 영어를 함께 이해하는 모델을 만들기 위해 많은 자료를 모았습니다. 질문이 있으면 언제든지 물어보세요.
The quick brown fox jumps over the lazy dog. Language models predict the next token from the tokens before it.
Quantization stores weights with fewer bits; validation proves that the converted file still computes the same thing.
def add(a, b):
    return a + b

for i in range(10):
    print(f"value {i}: {i * i}")

class Model:
    def __init__(self, layers: int = 30) -> None:
        self.layers = layers
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1,000,000 2.4B 7.8B 32B 102400 tokens.
사용자가 질문하면 어시스턴트가 답합니다. 생각을 정리한 뒤에 대답하세요. 도구를 호출하고 결과를 확인합니다.
{"name": "get_weather", "arguments": {"city": "Seoul", "unit": "celsius"}}
<think> reasoning </think> <tool_call> call </tool_call> <tool_result> result </tool_result>
이 문장은 토크나이저를 학습하기 위한 예시입니다. 한글, English, 숫자 12345, 그리고 코드가 섞여 있습니다.
"""


def build_tokenizer(split_digits: bool) -> Tokenizer:
    """Train the BPE part; `split_digits` gives the EXAONE 3.x pre-tokenizer (digits one by one)."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    trainer = trainers.BpeTrainer(
        vocab_size=N_MERGE_VOCAB,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trained.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    return trained


def with_added_tokens(tj: dict, added: list[tuple[str, bool]]) -> dict:
    """A trained byte-level BPE tokenizer.json with `added` (content, special) at ids 0.. and the trained
    vocabulary after them; like EXAONE's own vocab.json, the model vocabulary holds the added tokens at their
    ids too. Checked to load in the tokenizers library."""
    vocab = {c: i for i, (c, _) in enumerate(added)}
    vocab.update({t: i + len(added) for t, i in sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])})
    tj["model"]["vocab"] = vocab
    tj["added_tokens"] = [
        {
            "id": i,
            "content": c,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": special,
        }
        for i, (c, special) in enumerate(added)
    ]
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    Tokenizer.from_str(json.dumps(tj))  # must load in the tokenizers library
    return tj


def write_tokenizer_files(out_dir: Path, split_digits: bool, chat_template: str, template_in_jinja: bool) -> int:
    """Write tokenizer.json + tokenizer_config.json (+ chat_template.jinja); returns the tokenizer's size."""
    trained = json.loads(build_tokenizer(split_digits).to_str())
    added = added_tokens()
    tj = with_added_tokens(trained, added)
    vocab = tj["model"]["vocab"]
    (out_dir / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": c, "special": s} for i, (c, s) in enumerate(added)},
        "bos_token": "[BOS]",
        "clean_up_tokenization_spaces": False,
        "eos_token": "[|endofturn|]",
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "[PAD]",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "[UNK]",
    }
    if template_in_jinja:
        (out_dir / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    else:
        cfg["chat_template"] = chat_template
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return len(vocab)
