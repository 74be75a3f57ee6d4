"""Logit comparison between a reference and a test model, in the manner of `llama-perplexity --kl-divergence`.

Row i of a logit matrix is the model's prediction for token i + 1, so the T - 1 rows 0..T-2 are scored
against tokens[1:]; the last row predicts a token we do not have. Distribution statistics (KL divergence,
same top-1, delta-p, perplexity) use those scored rows; the raw logit differences use every row.

Thresholds (the numbers behind `THRESHOLDS`)
--------------------------------------------
Quantised types: published llama.cpp KL-divergence runs on 7-8B models against their FP16 logits give
roughly Q8_0 mean KLD ~1e-3 / same top-1 ~98.5 %, Q6_K ~4e-3 / ~97.5 %, Q5_K_M ~1e-2 / ~96 %,
Q4_K_M ~3e-2 / ~93 %, Q4_0 ~6e-2 / ~90 %, with the 99th percentile some 10x the mean; 1-2B models
(EXAONE 4.0-1.2B, 3.5-2.4B) lose more, up to about twice that. The limits sit 2-5x above those
figures: an honest build of a small real model passes, while the mistakes a validator exists for
(swapped or transposed tensors, wrong RoPE layout or scaling, a dropped norm, an off-by-one in
token alignment) scramble the distribution: mean KLD well above 1 and same-top-1 far below 80 %.

Tiny random models meet these limits only if they are well conditioned. Measured on make-tiny
checkpoints (400 tokens of EVAL_TEXT, llama-cpp-python 0.3.36 CPU, files from llama.cpp's own
quantiser): when every layer adds a unit-RMS update to a 0.25-RMS embedding, the network is chaotic
and Q4_K_M reaches mean KLD 0.4-2.9 with same top-1 15-82 % (Q8_0: 5e-3 to 5e-2), numbers no
threshold could separate from a broken file. With the residual updates scaled down to ~0.2
(post-norm gains / output projections), tiny EXAONE 4 gives Q8_0 5e-4, Q6_K 4e-3, Q5_K_M 1.2e-2,
Q4_K_M 4e-2, Q4_0 5e-2 mean KLD with top-1 >= 98 %: the same picture as a real model. The same
scaling did not tame the untied EXAONE 3.0 or the 64-layer hybrid tiny models (median top
probability ~0.16, Q4_K_M mean KLD 0.4-1.5): a tiny model must be checked for this before its
quantised builds are held to the table.

Float types: the numpy reference matches llama.cpp's F32 path to max |dlogit| / max |logit| ~ 5e-6
with an F32 KV cache. llama.cpp's default F16 KV cache, and its rounding of activations to F16/BF16
inside matrix products, move that to <= 3.7e-3 (F32 file), 4.7e-3 (F16), 3.3e-2 (BF16) and mean KLD
<= 2.4e-5, 5.5e-5, 2e-3 on the tiny models (chaotic ones at worst; well-conditioned ones stay below
1e-3 for F32). `max_rel_logit_diff` = 5e-3, 2e-2, 5e-2 leaves room for that and still flags logits
scaled by 1 % in an F32 build; run float builds with an F32 KV cache for a much tighter check.

`judge` treats NaN as a failure (every comparison with NaN is false), so non-finite test logits fail.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from exaone_gguf.errors import InputError

ROW_CHUNK = 256  # rows converted to float64 at a time: [256, 102400] f64 is 200 MB


@dataclass(frozen=True)
class LogitComparison:
    n_tokens: int  # T, rows compared for raw logits
    n_scored: int  # T - 1, rows scored against the next token
    vocab_size: int
    finite: bool  # every test logit is finite
    mean_kld: float  # KL(P_ref || P_test) over scored rows, nats
    median_kld: float
    p99_kld: float
    max_kld: float
    same_top1: float  # % of scored rows where argmax agrees
    mean_delta_p: float  # mean of p_test(next) - p_ref(next)
    rms_delta_p: float
    max_abs_delta_p: float
    ppl_ref: float
    ppl_test: float
    max_abs_logit_diff: float  # over all T rows
    max_abs_logit_ref: float

    @property
    def rel_logit_diff(self) -> float:
        return self.max_abs_logit_diff / self.max_abs_logit_ref if self.max_abs_logit_ref > 0 else math.inf

    def to_dict(self) -> dict[str, float | int | bool | None]:
        """JSON-ready: non-finite floats become None (JSON has no NaN)."""
        d = asdict(self)
        d["rel_logit_diff"] = self.rel_logit_diff
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable: max subtracted first)."""
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(ref: np.ndarray, test: np.ndarray, tokens: list[int]) -> LogitComparison:
    """Compare test logits [T, V] with reference logits [T, V] for the token sequence that produced them."""
    ref, test = np.asarray(ref), np.asarray(test)
    if ref.ndim != 2 or ref.shape != test.shape:
        raise InputError(f"logit comparison: shapes differ or are not 2-D (reference {ref.shape}, test {test.shape}).")
    n, vocab = ref.shape
    if len(tokens) != n or n < 2:
        raise InputError(f"logit comparison: need T >= 2 logit rows and one token per row, got {n} rows, {len(tokens)} tokens.")
    nxt = np.asarray(tokens[1:], dtype=np.int64)
    if nxt.size and (nxt.min() < 0 or nxt.max() >= vocab):
        raise InputError(f"logit comparison: a token id is outside the vocabulary of {vocab}.")
    if not np.isfinite(ref).all():
        raise InputError("logit comparison: the reference logits contain NaN or infinity.")

    kld, dp, lp_ref, lp_test, top_same = [], [], [], [], []
    for s in range(0, n - 1, ROW_CHUNK):
        e = min(s + ROW_CHUNK, n - 1)
        a, b = log_softmax(ref[s:e]), log_softmax(test[s:e])
        with np.errstate(invalid="ignore"):  # NaN test rows stay NaN and fail the judge
            k = (np.exp(a) * (a - b)).sum(axis=-1)
        kld.append(np.where(k < 0, 0.0, k))  # tiny negatives are rounding; NaN passes through
        rows = np.arange(e - s)
        la, lb = a[rows, nxt[s:e]], b[rows, nxt[s:e]]
        lp_ref.append(la)
        lp_test.append(lb)
        dp.append(np.exp(lb) - np.exp(la))
        top_same.append(ref[s:e].argmax(-1) == test[s:e].argmax(-1))
    kld_a, dp_a = np.concatenate(kld), np.concatenate(dp)
    lp_ref_a, lp_test_a = np.concatenate(lp_ref), np.concatenate(lp_test)

    diff = max(float(np.abs(ref[s : s + ROW_CHUNK] - test[s : s + ROW_CHUNK]).max()) for s in range(0, n, ROW_CHUNK))
    finite = bool(np.isfinite(test).all())
    return LogitComparison(
        n_tokens=n,
        n_scored=n - 1,
        vocab_size=vocab,
        finite=finite,
        mean_kld=float(kld_a.mean()),
        median_kld=float(np.median(kld_a)),
        p99_kld=float(np.percentile(kld_a, 99)),
        max_kld=float(kld_a.max()),
        same_top1=float(100.0 * np.concatenate(top_same).mean()),
        mean_delta_p=float(dp_a.mean()),
        rms_delta_p=float(np.sqrt(np.mean(dp_a**2))),
        max_abs_delta_p=float(np.abs(dp_a).max()),
        ppl_ref=float(np.exp(-lp_ref_a.mean())),
        ppl_test=float(np.exp(-lp_test_a.mean())),
        max_abs_logit_diff=diff if finite else math.nan,
        max_abs_logit_ref=float(np.abs(ref).max()),
    )


@dataclass(frozen=True)
class Thresholds:
    name: str
    max_mean_kld: float
    max_p99_kld: float
    min_same_top1: float  # percent
    max_rel_logit_diff: float | None = None  # float types only: quantised logits legitimately move more


THRESHOLDS: dict[str, Thresholds] = {
    t.name: t
    for t in [
        #          name       mean KLD  p99 KLD  top-1 %  max rel dlogit
        Thresholds("F32",     1e-4,     1e-3,    99.0,    5e-3),
        Thresholds("F16",     5e-4,     5e-3,    98.0,    2e-2),
        Thresholds("BF16",    5e-3,     3e-2,    95.0,    5e-2),
        Thresholds("Q8_0",    5e-3,     5e-2,    95.0),
        Thresholds("Q6_K",    1.5e-2,   1.5e-1,  93.0),
        Thresholds("Q5_K_M",  3e-2,     3e-1,    90.0),
        Thresholds("Q4_K_M",  1e-1,     1.0,     85.0),
        Thresholds("Q4_0",    1.5e-1,   1.5,     80.0),
        Thresholds("GENERIC", 1.5e-1,   1.5,     80.0),  # any other type: as loose as the loosest named one
    ]
}


def thresholds_for(type_name: str) -> Thresholds:
    """Limits for a GGUF file type name ('q4_k_m', 'BF16', 'MOSTLY_Q8_0' ...), GENERIC when unknown."""
    key = type_name.upper().removeprefix("MOSTLY_")
    return THRESHOLDS.get(key, THRESHOLDS["GENERIC"])


def judge(c: LogitComparison, t: Thresholds) -> list[tuple[str, bool, str]]:
    """(check name, passed, one-line detail) for each limit; NaN never passes."""
    checks = [
        ("finite", c.finite, "all test logits finite" if c.finite else "test logits contain NaN or infinity"),
        ("mean_kld", c.mean_kld <= t.max_mean_kld, f"mean KLD {c.mean_kld:.3g} (max {t.max_mean_kld:g})"),
        ("p99_kld", c.p99_kld <= t.max_p99_kld, f"99th percentile KLD {c.p99_kld:.3g} (max {t.max_p99_kld:g})"),
        ("same_top1", c.same_top1 >= t.min_same_top1, f"same top-1 {c.same_top1:.2f}% (min {t.min_same_top1:g}%)"),
    ]
    if t.max_rel_logit_diff is not None:
        rel = c.rel_logit_diff
        checks.append(
            ("rel_logit_diff", rel <= t.max_rel_logit_diff,
             f"max |dlogit| / max |logit| {rel:.3g} (max {t.max_rel_logit_diff:g})")
        )
    return [(name, bool(ok), detail) for name, ok, detail in checks]
