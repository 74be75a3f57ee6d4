"""The runner decodes LOGITS_BATCH tokens at a time (llama.cpp's output and compute buffers then hold 64 rows of
logits, not all of them: ~200 MB less beside a 1.2B model), and that changes no logit: the KV cache carries the
earlier positions, and each row is the same sums in the same order (measured bit for bit on the trained SmolLM2 at
Q4_K_M and the tiny exaone4 at F32, 256 tokens)."""

from __future__ import annotations

import numpy as np
import pytest

from exaone_gguf.model.texts import load_text
from exaone_gguf.runtime import logits

pytestmark = pytest.mark.slow  # llama.cpp loads each file twice (2 s a case)


@pytest.mark.parametrize("outtype", ["f32", "q4_k_m"])
def test_logits_in_batches_equal_one_batch(tiny_gguf, monkeypatch, outtype):
    path = tiny_gguf("exaone4", outtype)
    small, out = logits.LOGITS_BATCH, {}
    for batch in (small, 256):
        monkeypatch.setattr(logits, "LOGITS_BATCH", batch)
        with logits.Runner(path, n_ctx=256) as runner:
            tokens = runner.llm.tokenize(load_text(None).encode(), add_bos=False, special=False)[:200]
            out[batch] = runner.logits(tokens)
    assert len(tokens) == 200 > 3 * small  # four batches of the smaller size, one of the larger
    assert np.array_equal(out[small], out[256])
