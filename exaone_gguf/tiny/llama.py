"""make-tiny `llama` / `llama-awq`: a KULLM3-shaped (SOLAR / Llama 2 lineage) tiny checkpoint with a
SentencePiece tokenizer trained on the spot (BPE with byte fallback and split digits, like Llama 2's).

The tokenizer has fewer pieces than config.json's vocab_size, so the converter's padding is exercised
(KULLM3-like files pad too when a fine-tune grows the embedding).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from exaone_gguf.tiny.tokenizer import TRAINING_TEXT

SPM_PIECES = 1000  # trained pieces: <unk> <s> </s>, 256 byte tokens, then BPE merges

KULLM3_SYSTEM_PROMPT = (
    "당신은 고려대학교 NLP&AI 연구실에서 만든 AI 챗봇입니다. 당신의 이름은 'KULLM'으로, 한국어로는 '구름'을 뜻합니다. "
    "당신은 비도덕적이거나, 성적이거나, 불법적이거나 또는 사회 통념적으로 허용되지 않는 발언은 하지 않습니다. "
    "사용자와 즐겁게 대화하며, 사용자의 응답에 가능한 정확하고 친절하게 응답함으로써 최대한 도와주려고 노력합니다. "
    "질문이 이상하다면, 어떤 부분이 이상한지 설명합니다. 거짓 정보를 발언하지 않도록 주의합니다."
)

# Llama-2 chat format with a Korean default system prompt (KULLM3's style): the system prompt sits in
# <<SYS>> inside the first [INST]; every assistant turn ends with EOS.
KULLM3_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    '{% else %}{% set loop_messages = messages %}{% set system_message = "' + KULLM3_SYSTEM_PROMPT + '" %}{% endif %}'
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def train_sentencepiece(pieces: int = SPM_PIECES) -> bytes:
    """A Llama-2-style SentencePiece model (serialized proto) trained on the package's bilingual text."""
    import sentencepiece as spm

    # The default system prompt is in the text so a chat prompt stays short (as with the real 32k vocabulary).
    lines = [ln for ln in TRAINING_TEXT.splitlines() if ln.strip()] + [KULLM3_SYSTEM_PROMPT]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=pieces,
        hard_vocab_limit=False,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",  # llama.cpp does not normalize; neither does Llama's model
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        num_threads=1,  # deterministic
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return model.getvalue()


def write_spm_tokenizer(out_dir: Path, chat_template: str = KULLM3_TEMPLATE) -> int:
    """tokenizer.model + tokenizer_config.json + special_tokens_map.json as LlamaTokenizer saves them."""
    out_dir = Path(out_dir)
    (out_dir / "tokenizer.model").write_bytes(train_sentencepiece())
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {
                "content": c,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, c in enumerate(("<unk>", "<s>", "</s>"))
        },
        **specials,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 4096,
        "pad_token": None,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "use_default_system_prompt": False,
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
    return SPM_PIECES
