"""Converted tiny models run in llama.cpp and agree with the source checkpoint run by transformers."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_FAMILIES, llama_cpp_logits
from hf_models import transformers_logits

pytest.importorskip("torch", reason="needs the reference extra (torch, transformers)")

N_TOKENS = 48


def tokens_for(seed: int = 1) -> list[int]:
    # Ids from the trained part of the tiny tokenizer and its special tokens: real, reachable tokens.
    rng = np.random.default_rng(seed)
    return [1] + rng.integers(362, 1100, N_TOKENS - 1).tolist()


N_SEQUENCES = 4  # top-1 agreement is a rate: measured over 4 inputs of 48 tokens (192 positions)


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_logits_match_transformers(family, outtype, tiny_dir, tiny_gguf, tmp_path):
    same, rels = [], []
    for seed in range(1, N_SEQUENCES + 1):
        tokens = tokens_for(seed)
        ref = transformers_logits(tiny_dir(family), tokens, tmp_path)
        got = llama_cpp_logits(tiny_gguf(family, outtype), tokens)
        assert ref.shape == got.shape == (N_TOKENS, 102400)
        same.append(ref.argmax(-1) == got.argmax(-1))
        rels.append(float(np.abs(ref - got).max() / np.abs(ref).max()))
    same_top1, rel = float(np.mean(same)), max(rels)
    print(f"{family} {outtype}: same top-1 {same_top1:.3f}, max |diff| / max |logit| {rel:.2e}")
    if outtype == "f32":
        assert same_top1 == 1.0
        assert rel <= 1e-2
    else:
        assert same_top1 >= 0.98
        assert rel <= 5e-2
