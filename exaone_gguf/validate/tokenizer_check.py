"""Tokenizer checks: llama.cpp's tokenization of the GGUF against the source's `tokenizers` tokenization."""

from __future__ import annotations

from exaone_gguf.validate.evaltext import EVAL_TEXT
from exaone_gguf.validate.results import CheckResult

# A corpus that exercises what byte-level BPE pre-tokenizers disagree on.
TOKENIZER_CORPUS = [
    "안녕하세요, EXAONE입니다. 12345",
    "Tell me about the Miracle on the Han river.",
    "대한민국의 수도는 서울이고, 부산은 제2의 도시입니다.",
    "숫자: 0 7 42 3.14159 1,000,000 2024-12-09 010-1234-5678 99.9%",
    "def f(x):\n    return x ** 2  # 제곱\n\tprint('tab')\n",
    "if (a && b) { return a->next; } else { i += 2; }",
    "emoji 😀🎉👍🏽 and 한글 🇰🇷 mixed",
    "   leading spaces, trailing spaces   ",
    "line one\n\nline three\r\nwindows line\n",
    "I've been 'told he's there, isn't it? We'll see. They'd go.",
    "URL https://example.com/path?q=1&x=2 and e-mail user@example.com",
    "[|system|]시스템[|endofturn|]\n[|user|]안녕?\n[|assistant|]<think>\n\n</think>\n\n반가워요[|endofturn|]",
    '<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_result>{"result": 1}</tool_result>',
    "Ünïcödé façade naïve café — “quotes” ‘single’ … ellipsis",
    "中文字符和日本語のテキスト、そして한국어",
    EVAL_TEXT,
]
ROLE_MARKERS = ["[|system|]", "[|user|]", "[|assistant|]", "[|tool|]", "[|endofturn|]"]


def llama_tokenize(llm, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def compare_tokenization(llm, reference, texts: list[str] = TOKENIZER_CORPUS) -> CheckResult:
    """Token for token equality on every text (llama.cpp with special tokens parsed, HF without BOS)."""
    for i, text in enumerate(texts):
        got = llama_tokenize(llm, text)
        want = reference.encode(text, add_special_tokens=False).ids
        if got != want:
            at = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            return CheckResult(
                "tokenizer: matches source",
                "fail",
                f"text {i} ({text[:30]!r}...) differs at token {at}: llama.cpp {got[at : at + 5]} vs source {want[at : at + 5]}",
            )
    n = sum(len(llama_tokenize(llm, t)) for t in texts)
    return CheckResult("tokenizer: matches source", "pass", f"{len(texts)} texts, {n} tokens identical")


def check_special_tokens(
    llm, eos_id: int | None, eot: str = "[|endofturn|]", markers: tuple[str, ...] | None = None
) -> CheckResult:
    """Role markers and the end-of-turn token must each be one token, and the end-of-turn token must be the EOS.
    `markers`: the family's role markers (default: EXAONE's [|role|] markers)."""
    bad = {m: llama_tokenize(llm, m) for m in (markers or ROLE_MARKERS)}
    bad = {m: t for m, t in bad.items() if len(t) != 1}
    if bad:
        return CheckResult("tokenizer: role markers are single tokens", "fail", f"split into pieces: {bad}")
    eot_id = llama_tokenize(llm, eot)[0]
    if eos_id is not None and eot_id != eos_id:
        return CheckResult(
            "tokenizer: role markers are single tokens", "fail", f"{eot} is token {eot_id} but EOS is {eos_id}"
        )
    return CheckResult("tokenizer: role markers are single tokens", "pass", f"{eot} = {eot_id} = EOS")


def check_round_trip(llm, texts: list[str] = TOKENIZER_CORPUS) -> CheckResult:
    """Without a source: detokenize(tokenize(text)) gives the text back."""
    for i, text in enumerate(texts):
        back = llm.detokenize(llama_tokenize(llm, text), special=True).decode("utf-8", errors="replace")
        if back != text:
            return CheckResult(
                "tokenizer: round trip", "fail", f"text {i} ({text[:30]!r}...) came back as {back[:40]!r}"
            )
    return CheckResult("tokenizer: round trip", "pass", f"{len(texts)} texts round-trip")
