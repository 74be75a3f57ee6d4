"""Tokenizer checks: llama.cpp's tokenization of the GGUF against the source's `tokenizers` tokenization."""

from __future__ import annotations

from dataclasses import dataclass

from exaone_gguf.checkpoint.sentencepiece import SentencePieceReference
from exaone_gguf.checkpoint.token_files import CONTROL, USER_DEFINED
from exaone_gguf.model.texts import EVAL_TEXT
from exaone_gguf.validate.results import CheckResult
from exaone_gguf.validate.template_check import Conversation, conversations_for, render_all

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


@dataclass(frozen=True)
class ChatVocab:
    """What a chat template is rendered with and checked against: the template, the BOS / EOS strings it is
    given, the special tokens (control and user-defined: {text: id}) and, for messages, where they came from."""

    template: str | None
    bos: str
    eos: str
    specials: dict[str, int]
    origin: str


def _chat_vocab(template, tokens: list[str], types, bos: int | None, eos: int | None, origin: str) -> ChatVocab:
    text = lambda i: tokens[i] if i is not None and 0 <= i < len(tokens) else ""  # noqa: E731
    specials = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if t and int(k) in (CONTROL, USER_DEFINED)}
    return ChatVocab(template or None, text(bos), text(eos), specials, origin)


def source_chat_vocab(ckpt) -> ChatVocab:
    """The source's own tokenizer files and chat template (tokenizer.json / vocab.json + merges.txt /
    tokenizer_config.json / chat_template.jinja, whatever the checkpoint has)."""
    tok, spec = ckpt.tokenizer, ckpt.spec
    tokens, types = tok.token_list(spec.vocab_size)
    bos = tok.bos_token_id if tok.bos_token_id is not None else spec.bos_token_id
    eos = tok.eos_token_id if tok.eos_token_id is not None else spec.eos_token_id
    return _chat_vocab(tok.chat_template, tokens, types, bos, eos, "the source's template and tokenizer")


def file_chat_vocab(f) -> ChatVocab:
    """The GGUF's own template and vocabulary (no source to compare with)."""
    tokens = list(f.get("tokenizer.ggml.tokens") or [])
    types = f.get("tokenizer.ggml.token_type")
    types = list(types) if types is not None else [0] * len(tokens)
    bos, eos = f.get("tokenizer.ggml.bos_token_id"), f.get("tokenizer.ggml.eos_token_id")
    return _chat_vocab(
        f.get("tokenizer.chat_template"), tokens, types, bos, eos, "the file's own template and vocabulary"
    )


# An assistant turn whose end the check looks for: the first special token after this content ends the turn.
_TURN_END_CONTENT = "Hello there, friend."
_TURN_END = Conversation(
    "turn_end",
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _TURN_END_CONTENT}],
    frozenset(),
    add_generation_prompt=False,
)


def _is_eog(llm, token: int) -> bool:
    """llama.cpp's own end-of-generation set (EOS, EOT and the end-of-turn tokens it recognises by text)."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))


def check_chat_tokens(llm, cv: ChatVocab, reference=None) -> CheckResult:
    """The special tokens the chat template writes (those of `cv.specials` found in its renders) are each one
    llama.cpp token with the id `cv.specials` gives them, the token that ends an assistant turn is one llama.cpp
    ends generation on, and, with `reference` (the source's tokenizer), llama.cpp tokenizes every render as it
    does. `cv`: the source's template and tokenizer when there is a source, else the file's own."""
    name = "tokenizer: chat template tokens"
    if cv.template is None:
        return CheckResult(name, "skip", f"no chat template in {cv.origin}: no chat tokens to check")
    convs = [*conversations_for(cv.template), _TURN_END]
    renders, error = render_all(cv.template, convs, cv.bos, cv.eos, "chat template")
    if error:
        return CheckResult(name, "skip", f"{cv.origin}: the template does not render ({error})")
    used = sorted(t for t in cv.specials if any(t in r for r in renders.values()))
    problems = [
        f"{t!r} is {got} in llama.cpp, {cv.specials[t]} in {cv.origin}"
        for t in used
        if (got := llama_tokenize(llm, t)) != [cv.specials[t]]
    ]
    # SentencePiece reads special tokens written in text as plain text (llama.cpp parses them): markers only
    whole = reference is not None and not isinstance(reference, SentencePieceReference)
    if whole:
        for conv in convs:
            got, want = (
                llama_tokenize(llm, renders[conv.name]),
                reference.encode(renders[conv.name], add_special_tokens=False).ids,
            )
            if got != want:
                at = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                problems.append(
                    f"'{conv.name}' rendered: token {at} is {got[at : at + 3]} in llama.cpp, {want[at : at + 3]} "
                    "in the source tokenizer"
                )
                break
    tail = renders[_TURN_END.name]
    tail = tail[tail.rfind(_TURN_END_CONTENT) + len(_TURN_END_CONTENT) :]
    ends = sorted((tail.find(t), -len(t), t) for t in used if t in tail)
    data = {"markers": used, "turn_end": ends[0][2] if ends else None, "compared_with": cv.origin}
    if ends:
        end = ends[0][2]
        if not _is_eog(llm, cv.specials[end]):
            eos = llm.token_eos()
            problems.append(
                f"{end!r} (id {cv.specials[end]}) ends an assistant turn in {cv.origin}, but llama.cpp does not stop "
                f"on it (EOS is {eos}); set tokenizer.ggml.eos_token_id to {cv.specials[end]}"
            )
    if problems:
        return CheckResult(name, "fail", "; ".join(problems[:3]), data)
    if not ends:
        return CheckResult(
            name,
            "warn",
            f"{len(used)} special tokens in the renders of {cv.origin}, none after an assistant's reply "
            f"({tail[:20]!r}): llama.cpp has no token to stop a turn on",
            data,
        )
    return CheckResult(
        name,
        "pass",
        f"{len(used)} special tokens of {cv.origin} are single tokens"
        + (f", {len(convs)} renders tokenized as the source does" if whole else "")
        + f"; {ends[0][2]!r} ends a turn and llama.cpp stops on it",
        data,
    )


def check_round_trip(llm, texts: list[str] = TOKENIZER_CORPUS) -> CheckResult:
    """Without a source: detokenize(tokenize(text)) gives the text back."""
    for i, text in enumerate(texts):
        back = llm.detokenize(llama_tokenize(llm, text), special=True).decode("utf-8", errors="replace")
        if back != text:
            return CheckResult(
                "tokenizer: round trip", "fail", f"text {i} ({text[:30]!r}...) came back as {back[:40]!r}"
            )
    return CheckResult("tokenizer: round trip", "pass", f"{len(texts)} texts round-trip")
