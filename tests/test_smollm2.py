"""The real trained network (scripts/smollm2_checkpoint.py) is what it claims: transformers runs both layouts to the
same logits and completes a prompt with the right word, and our F32 conversion of the EXAONE 3.x layout runs in
llama.cpp to transformers' logits."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import llama_cpp_logits
from hf_models import transformers_logits

pytestmark = pytest.mark.slow  # torch / transformers

pytest.importorskip("torch", reason="needs the reference extra (torch, transformers)")

PROMPT = "The capital of France is"
# Measured max |diff| / max |logit| of our F32 file in llama.cpp (F32 KV cache) against transformers on these 29 tokens:
# 1.9e-6 (the tiny models' bound in test_convert_logits is 1e-5).
F32_REL = 1e-5


def test_transformers_completes_the_prompt(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = smollm2("llama")
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, ids.shape[1] :]).startswith(" Paris")


def test_layouts_agree_and_f32_file_matches_transformers(smollm2, tmp_path):
    from transformers import AutoTokenizer

    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions

    exaone3, llama = smollm2("exaone3"), smollm2("llama")
    tokens = AutoTokenizer.from_pretrained(llama)(
        "Paris is the capital of France. It is known for the Eiffel Tower, built in 1889, and for its museums."
    ).input_ids
    assert len(tokens) >= 20
    ref = transformers_logits(llama, tokens, tmp_path)
    np.testing.assert_array_equal(transformers_logits(exaone3, tokens, tmp_path), ref)  # the same network
    out = tmp_path / "smollm2-f32.gguf"
    convert(exaone3, out, ConvertOptions(outtype="f32"))
    got = llama_cpp_logits(out, tokens)
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert rel < F32_REL, rel
    assert (got.argmax(-1) == ref.argmax(-1)).all()
