"""Llama family (SentencePiece vocab, q/k permutation) and EXAONE 3.x written as `--arch llama`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import llama_cpp_logits
from helpers import unpermute_rows

from exaone_gguf.checkpoint.sentencepiece import SentencePieceData
from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.errors import InputError
from exaone_gguf.families import load_checkpoint
from exaone_gguf.families.llama import permute_rows
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.tiny.llama import KULLM3_SYSTEM_PROMPT, train_sentencepiece
from exaone_gguf.validate import validate
from exaone_gguf.validate.tokenizer_check import TOKENIZER_CORPUS

pytestmark = pytest.mark.slow  # llama.cpp runs of the tiny models


def test_permutation_pairs_rotate_half_dims():
    """Per head, new row 2i = old row i and new row 2i+1 = old row D/2 + i (llama.cpp's converter)."""
    d, heads = 8, 3
    rows = np.arange(heads * d, dtype=np.float32)[:, None] * np.ones((1, 5), np.float32)
    got = permute_rows(d)(rows)[:, 0].astype(int).tolist()
    want = [h * d + (i // 2 if i % 2 == 0 else d // 2 + i // 2) for h in range(heads) for i in range(d)]
    assert got == want
    assert np.array_equal(unpermute_rows(d)(permute_rows(d)(rows)), rows)


def test_llama_tiny_vocab_is_sentencepiece(tiny_dir, tiny_gguf):
    d = tiny_dir("llama")
    tok = load_checkpoint(d).tokenizer
    assert isinstance(tok, SentencePieceData)
    f = read_gguf(tiny_gguf("llama", "f32"))
    assert f.get("general.architecture") == "llama"
    assert f.get("tokenizer.ggml.model") == "llama"
    tokens, scores, types = (
        f.get("tokenizer.ggml.tokens"),
        f.get("tokenizer.ggml.scores"),
        f.get("tokenizer.ggml.token_type"),
    )
    want_tokens, want_scores, want_types = tok.vocab_entries(1024)
    assert tokens == want_tokens and list(np.asarray(types)) == want_types
    assert np.allclose(np.asarray(scores), want_scores)
    assert tokens[3] == "<0x00>" and types[3] == 6  # byte fallback pieces are BYTE tokens
    assert tokens[1023] == "[PAD1023]" and types[1023] == 5  # padding to config's vocab_size
    assert (f.get("tokenizer.ggml.bos_token_id"), f.get("tokenizer.ggml.eos_token_id")) == (1, 2)
    assert f.get("tokenizer.ggml.add_bos_token") is True
    assert KULLM3_SYSTEM_PROMPT in f.get("tokenizer.chat_template")


def test_llama_tokenizes_like_sentencepiece(tiny_dir, tiny_gguf):
    import sentencepiece as spm
    from llama_cpp import Llama

    sp = spm.SentencePieceProcessor(model_file=str(tiny_dir("llama") / "tokenizer.model"))
    llm = Llama(str(tiny_gguf("llama", "f32")), vocab_only=True, verbose=False)
    n = 0
    for text in TOKENIZER_CORPUS:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == sp.encode(text), text
        n += len(sp.encode(text))
    assert llm.tokenize(b"hi", add_bos=True)[0] == 1
    llm.close()
    print(f"\n{len(TOKENIZER_CORPUS)} texts, {n} tokens identical to sentencepiece")


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_llama_validates(outtype, tiny_dir, tiny_gguf):
    report = validate(tiny_gguf("llama", outtype), tiny_dir("llama"), max_tokens=128)
    assert report.passed, [f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail"]
    if outtype == "f32":
        assert report.metrics["same_top1"] == 100.0


def test_validator_catches_other_sentencepiece_model(tiny_dir, tiny_gguf, tmp_path):
    """The same weights with a differently trained tokenizer.model: the tokenizer and vocab checks fail."""
    import shutil

    d = tmp_path / "other"
    shutil.copytree(tiny_dir("llama"), d)
    (d / "tokenizer.model").write_bytes(train_sentencepiece(700))
    report = validate(tiny_gguf("llama", "f32"), d, max_tokens=64)
    failed = {c.name for c in report.checks if c.status == "fail"}
    assert {"tokenizer: matches source", "metadata: vocabulary"} <= failed


@pytest.mark.parametrize("family", ["exaone3", "exaone3.5"])
def test_exaone_as_llama_matches_native(family, tiny_dir, tiny_gguf, tmp_path):
    out = tmp_path / f"{family}-llama.gguf"
    result = convert(tiny_dir(family), out, ConvertOptions(outtype="f32", arch="llama"))
    assert result.arch == "llama" and read_gguf(out).get("general.architecture") == "llama"
    rng = np.random.default_rng(3)
    tokens = [1] + rng.integers(362, 1100, 47).tolist()
    native = llama_cpp_logits(tiny_gguf(family, "f32"), tokens)
    as_llama = llama_cpp_logits(out, tokens)
    same = float(np.mean(native.argmax(-1) == as_llama.argmax(-1)))
    rel = float(np.abs(native - as_llama).max() / np.abs(native).max())
    print(f"\n{family} --arch llama vs exaone: same top-1 {same:.3f}, max rel diff {rel:.2e}")
    assert same == 1.0 and rel < 1e-4
    report = validate(out, tiny_dir(family), max_tokens=96)
    assert report.passed, [f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail"]


def test_exaone_as_llama_without_permutation_is_caught(tiny_dir, tmp_path, monkeypatch):
    """Skipping the q/k permutation gives a file whose logits the validator rejects."""
    from dataclasses import replace

    from exaone_gguf.families import llama

    monkeypatch.setattr(llama, "with_rope_permutation", lambda spec, maps: [replace(m) for m in maps])
    out = tmp_path / "unpermuted.gguf"
    convert(tiny_dir("exaone3"), out, ConvertOptions(outtype="f32", arch="llama"))
    monkeypatch.undo()  # the validator must use the real tensor table
    report = validate(out, tiny_dir("exaone3"), max_tokens=64)
    tensors = next(c for c in report.checks if c.name == "tensors: match source")
    assert tensors.status == "fail" and "attn_q.weight" in tensors.detail and "attn_k.weight" in tensors.detail
    assert {c.name: c.status for c in report.checks}["logits: mean kld"] in ("warn", "fail")


def test_arch_llama_refused_for_exaone4(tiny_dir, tmp_path):
    with pytest.raises(InputError, match="cannot be written as architecture 'llama'"):
        convert(tiny_dir("exaone4"), tmp_path / "x.gguf", ConvertOptions(outtype="f32", arch="llama"))
