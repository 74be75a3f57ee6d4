"""The imatrix's speed-ups change nothing but float32 rounding: blocked attention against the plain [T, T] softmax,
a segmented forward (several chunks as one batch) against one forward per chunk, a grouped imatrix run against
one chunk at a time, and the output head left out only where asked."""

from __future__ import annotations

import numpy as np
import pytest

from exaone_gguf.errors import InputError
from exaone_gguf.families import load_checkpoint
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.model import forward, ops
from exaone_gguf.model import imatrix as imx
from exaone_gguf.model.texts import CODE, MATHS, PROSE, plain_chats


def plain_attention(q, k, v, window):
    """The textbook computation: scores for every (query, key), -inf where masked, softmax, @ v, per head."""
    n, n_heads, d = q.shape
    group = n_heads // k.shape[1]
    pos = np.arange(n)
    visible = pos[None, :] <= pos[:, None]
    if window is not None:
        visible &= pos[:, None] - pos[None, :] < window
    out = np.empty_like(q)
    for h in range(n_heads):
        s = q[:, h].astype(np.float64) @ k[:, h // group].T.astype(np.float64) / np.sqrt(d)
        s = np.where(visible, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, h] = (p / p.sum(-1, keepdims=True)) @ v[:, h // group]
    return out.reshape(n, -1)


@pytest.mark.parametrize("window", [None, 10])
def test_blocked_attention_is_the_plain_softmax(window, monkeypatch):
    """Blocks of 8 queries over 45 tokens (a last, partial block; on the sliding layer the window reaches back
    across block edges), 4 query heads on 2 kv heads."""
    monkeypatch.setattr(ops, "ATTENTION_BLOCK", 8)
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((45, n, 16), dtype=np.float32) for n in (4, 2, 2))
    ref = plain_attention(q, k, v, window)
    err = np.abs(ops.attention(q, k, v, window) - ref).max() / np.abs(ref).max()
    assert err < 5e-7, err  # measured 1.4e-7 and 1.2e-7
    # the comparison sees a mask one key off (window + 1, or one key beyond the diagonal)
    wrong = plain_attention(q, k, v, window + 1) if window else plain_attention(q, np.roll(k, -1, 0), v, None)
    assert np.abs(ops.attention(q, k, v, window) - wrong).max() / np.abs(ref).max() > 1e-2

    # segments: each attends within itself, as separate calls do
    lengths = [17, 20, 8]
    joined = ops.attention(q, k, v, window, lengths)
    start = 0
    for n in lengths:
        alone = ops.attention(q[start : start + n], k[start : start + n], v[start : start + n], window)
        assert np.abs(joined[start : start + n] - alone).max() <= 1e-6 * np.abs(alone).max()
        start += n
    assert np.abs(joined[17:] - ops.attention(q, k, v, window)[17:]).max() > 1e-2  # unsegmented: it differs


def test_segment_lengths_must_cover_the_tokens():
    assert ops.segment_bounds(10, [4, 6]) == [(0, 4), (4, 10)]
    assert ops.segment_bounds(10, None) == [(0, 10)]
    for bad in ([4, 5], [4, 0, 6], [11, -1]):
        with pytest.raises(InputError, match="sum to the 10 tokens"):
            ops.segment_bounds(10, bad)


@pytest.mark.parametrize("family", ["exaone4-hybrid", "exaone3", "k-exaone"])
@pytest.mark.slow
def test_segmented_forward_equals_one_forward_per_chunk(family, tiny_dir):
    """Three chunks laid end to end as one batch give each chunk's own logits: RoPE positions restart at each chunk,
    attention (the hybrid's window of 8, K-EXAONE's of 16, EXAONE 3's full causal one) stays inside it, and
    K-EXAONE's routing is per token."""
    ckpt = load_checkpoint(tiny_dir(family))
    rng = np.random.default_rng(2)
    lengths = [40, 23, 57]
    chunks = [rng.integers(0, ckpt.spec.vocab_size, n).tolist() for n in lengths]
    joined = forward(ckpt, [t for c in chunks for t in c], segments=lengths)
    start, worst = 0, 0.0
    for c in chunks:
        alone = forward(ckpt, c)
        worst = max(worst, np.abs(joined[start : start + len(c)] - alone).max() / np.abs(alone).max())
        start += len(c)
    assert worst < 4e-6, worst  # measured 1.1e-6 (hybrid), 0 (EXAONE 3), 7.9e-7 (K-EXAONE)
    # without segments, the second and third chunks see the earlier ones: far from their own logits
    plain = forward(ckpt, [t for c in chunks for t in c])
    assert np.abs(plain[40:63] - forward(ckpt, chunks[1])).max() / np.abs(plain).max() > 1e-2


def test_without_logits_skips_only_the_head(tiny_dir):
    ckpt = load_checkpoint(tiny_dir("exaone4"))
    tokens = list(range(5, 30))
    with ops.without_logits():
        assert forward(ckpt, tokens).shape == (25, 0)
    assert forward(ckpt, tokens).shape == (25, ckpt.spec.vocab_size)


@pytest.mark.parametrize("family", ["exaone4-hybrid", "k-exaone"])
@pytest.mark.slow
def test_grouped_imatrix_equals_one_chunk_at_a_time(family, tiny_dir, tmp_path, monkeypatch):
    """Eight chunks of 64 in groups (as collect_imatrix runs them) give the matrix of eight single-chunk forwards:
    the same counts, sums equal to float32 rounding (K-EXAONE: per expert, routing included)."""
    text = tmp_path / "calib.txt"
    text.write_text("\n\n".join([PROSE, CODE, MATHS, plain_chats()]), encoding="utf-8")
    src = tiny_dir(family)
    assert imx.chunks_per_group(load_checkpoint(src).spec, 64) >= 8  # the tiny model's chunks all run together
    grouped = tmp_path / "grouped.gguf"
    imx.collect_imatrix(src, grouped, text=text, ctx=64, chunks=8)
    monkeypatch.setattr(imx, "GROUP_TOKENS", 64)  # one chunk per forward
    assert imx.chunks_per_group(load_checkpoint(src).spec, 64) == 1
    single = tmp_path / "single.gguf"
    imx.collect_imatrix(src, single, text=text, ctx=64, chunks=8)
    a, b = (read_gguf(p) for p in (grouped, single))
    worst = 0.0
    assert sorted(t.name for t in a.tensors) == sorted(t.name for t in b.tensors)
    for t in a.tensors:
        va, vb = (f.tensor_bytes(f.tensor(t.name)).view("<f4").astype(np.float64) for f in (a, b))
        if t.name.endswith(".counts"):
            assert np.array_equal(va, vb), t.name
        else:
            worst = max(worst, float(np.abs(va - vb).max() / np.abs(vb).max()))
    assert worst < 2e-6, worst  # measured 6.0e-7 (hybrid), 6.3e-7 (K-EXAONE)
