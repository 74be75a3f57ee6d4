"""llama.cpp tokenizes exactly as the source tokenizer does: the real EXAONE 4.0 files and our tiny ones."""

from __future__ import annotations

import pytest
from conftest import fixture_path

from exaone_gguf.checkpoint.tokenizer import load_tokenizer
from exaone_gguf.families import BPE_PRE_TOKENIZERS
from exaone_gguf.validate.tokenizer_check import TOKENIZER_CORPUS, compare_tokenization, llama_tokenize

pytestmark = pytest.mark.slow  # llama.cpp runs of the tiny models

ROLE_MARKERS = ["[|system|]", "[|user|]", "[|assistant|]", "[|tool|]", "[|endofturn|]"]  # EXAONE 4.0's


@pytest.fixture(scope="module")
def real_gguf(tiny_gguf):
    return tiny_gguf("exaone4", "bf16", tokenizer="exaone-4.0-1.2B")


def _vocab_only(path):
    from llama_cpp import Llama

    return Llama(str(path), vocab_only=True, verbose=False)


def test_real_exaone4_tokenizer_matches_tokenizers_library(real_gguf):
    llm = _vocab_only(real_gguf)
    reference = load_tokenizer(fixture_path("exaone-4.0-1.2B"), BPE_PRE_TOKENIZERS).build_reference()
    result = compare_tokenization(llm, reference)
    print(result.detail)
    assert result.status == "pass", result.detail
    # the corpus covers Korean, English, digits, code, emoji
    joined = "".join(TOKENIZER_CORPUS)
    for sample in ("안녕하세요", "Miracle", "12345", "return", "😀"):
        assert sample in joined


def test_real_exaone4_known_token_ids(real_gguf):
    # ids from transformers' EXAONE 4 tests (see exaone-formats.md section 4)
    llm = _vocab_only(real_gguf)
    assert llama_tokenize(llm, "Lorem ipsum dolor sit amet,") == [405, 7584, 79579, 76636, 2907, 94640, 373]
    assert llama_tokenize(llm, "hello") == [433, 9055]
    assert llama_tokenize(llm, "안녕하세요, EXAONE입니다. 12345") == [
        3801,
        1130,
        5847,
        373,
        11522,
        394,
        5746,
        10996,
        375,
        582,
        378,
        379,
        380,
        381,
        382,
    ]


def test_role_markers_and_end_of_turn_are_single_tokens(real_gguf):
    llm = _vocab_only(real_gguf)
    ids = {m: llama_tokenize(llm, m) for m in ROLE_MARKERS}
    assert ids == {
        "[|system|]": [357],
        "[|user|]": [360],
        "[|assistant|]": [359],
        "[|tool|]": [358],
        "[|endofturn|]": [361],
    }
    assert llm.token_eos() == 361 and llm.token_bos() == 1


@pytest.mark.parametrize("family,pre", [("exaone3", "exaone"), ("exaone4", "exaone4")])
def test_tiny_tokenizers_match(family, pre, tiny_dir, tiny_gguf):
    tok = load_tokenizer(tiny_dir(family), BPE_PRE_TOKENIZERS)
    assert tok.pre == pre  # decided from the tokenizer's own pre-tokenizer, not the model name
    result = compare_tokenization(_vocab_only(tiny_gguf(family, "bf16")), tok.build_reference())
    assert result.status == "pass", result.detail


def test_comparison_fails_on_a_different_tokenizer(tiny_dir, real_gguf):
    # the tiny tokenizer and the real one disagree: the check must say so
    result = compare_tokenization(
        _vocab_only(real_gguf), load_tokenizer(tiny_dir("exaone4"), BPE_PRE_TOKENIZERS).build_reference()
    )
    assert result.status == "fail" and "differs at token" in result.detail
