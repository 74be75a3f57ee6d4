"""compare_logits / judge: exact small cases, alignment of rows to next tokens, and failing inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from exaone_gguf.errors import InputError
from exaone_gguf.validate.metrics import (
    GROSS_LIMITS,
    ROW_CHUNK,
    THRESHOLDS,
    LogitComparison,
    compare_logits,
    grade,
    gross_limits,
    judge,
    thresholds_for,
)

ORDER = [
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "Q4_K_S",
    "Q4_1",
    "Q4_0",
    "IQ4_XS",
    "Q3_K_M",
    "Q2_K",
]


def _peaked(t: int, v: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Logits whose row i strongly predicts tokens[i + 1], like a trained model on its own text."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, v, t).tolist()
    logits = rng.normal(0, 2, (t, v)).astype(np.float32)
    logits[np.arange(t - 1), tokens[1:]] += 8.0
    return logits, tokens


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _all_pass(c: LogitComparison, t) -> bool:
    return all(ok for _, ok, _ in judge(c, t))


def test_identical_logits_give_zero_and_pass_everything():
    ref, tokens = _peaked(64, 50)
    c = compare_logits(ref, ref.copy(), tokens)
    assert c.mean_kld == 0 and c.max_kld == 0 and c.p99_kld == 0
    assert c.same_top1 == 100.0 and c.rms_delta_p == 0 and c.max_abs_logit_diff == 0
    assert c.ppl_ref == c.ppl_test
    assert c.n_tokens == 64 and c.n_scored == 63 and c.vocab_size == 50
    for t in THRESHOLDS.values():
        assert _all_pass(c, t), t.name


def test_hand_computed_two_token_case():
    # row 0: P = (1/2, 1/2), Q = (3/4, 1/4); next token is 1. Row 1 predicts nothing and must not count.
    ref = np.array([[0.0, 0.0], [5.0, 0.0]], dtype=np.float32)
    test = np.array([[math.log(3.0), 0.0], [0.0, 5.0]], dtype=np.float32)
    c = compare_logits(ref, test, [0, 1])
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = ln(4/3) / 2
    assert c.mean_kld == pytest.approx(kl, rel=1e-6) and c.max_kld == pytest.approx(kl, rel=1e-6)
    assert c.mean_delta_p == pytest.approx(-0.25, abs=1e-7)
    assert c.rms_delta_p == pytest.approx(0.25, abs=1e-7)
    assert c.ppl_ref == pytest.approx(2.0) and c.ppl_test == pytest.approx(4.0, rel=1e-6)
    assert c.same_top1 == 100.0  # argmax 0 in both rows that count
    assert c.max_abs_logit_diff == pytest.approx(5.0) and c.max_abs_logit_ref == pytest.approx(5.0)
    assert c.rel_logit_diff == pytest.approx(1.0)


def test_kld_statistics_match_a_direct_formula_across_chunks():
    t, v = ROW_CHUNK * 2 + 37, 31  # spans three chunks
    ref, tokens = _peaked(t, v, seed=1)
    test = ref + np.random.default_rng(2).normal(0, 0.5, ref.shape).astype(np.float32)
    p, q = _softmax(ref[:-1].astype(np.float64)), _softmax(test[:-1].astype(np.float64))
    kl = (p * np.log(p / q)).sum(-1)
    c = compare_logits(ref, test, tokens)
    assert c.mean_kld == pytest.approx(kl.mean(), rel=1e-9)
    assert c.median_kld == pytest.approx(np.median(kl), rel=1e-9)
    assert c.p99_kld == pytest.approx(np.percentile(kl, 99), rel=1e-9)
    assert c.max_kld == pytest.approx(kl.max(), rel=1e-9)
    nxt = np.array(tokens[1:])
    dp = q[np.arange(t - 1), nxt] - p[np.arange(t - 1), nxt]
    assert c.rms_delta_p == pytest.approx(np.sqrt(np.mean(dp**2)), rel=1e-9)
    assert c.ppl_ref == pytest.approx(np.exp(-np.mean(np.log(p[np.arange(t - 1), nxt]))), rel=1e-9)
    assert c.same_top1 == pytest.approx(100 * np.mean(ref[:-1].argmax(-1) == test[:-1].argmax(-1)))


def test_row_i_is_scored_against_token_i_plus_1():
    """A model that predicts the next token perfectly has perplexity ~1. Scoring row i against token i
    (the classic off-by-one) would make it look terrible."""
    t, v = 40, 60
    tokens = np.random.default_rng(3).permutation(v)[:t].tolist()  # distinct, so token i != token i+1
    ref = np.full((t, v), -20.0, dtype=np.float32)
    ref[np.arange(t - 1), tokens[1:]] = 20.0
    c = compare_logits(ref, ref, tokens)
    assert c.ppl_ref == pytest.approx(1.0, abs=1e-6)
    # A runner that returns logits shifted by one row must fail, however good each row looks.
    shifted = np.roll(ref, 1, axis=0)
    bad = compare_logits(ref, shifted, tokens)
    assert bad.same_top1 < 10 and bad.mean_kld > 10 and bad.ppl_test > 1e6
    assert not _all_pass(bad, thresholds_for("Q4_0"))


def test_perturbed_logits_fail_and_small_noise_passes():
    ref, tokens = _peaked(200, 500, seed=4)
    rng = np.random.default_rng(5)
    tiny = compare_logits(ref, ref + rng.normal(0, 1e-4, ref.shape).astype(np.float32), tokens)
    assert _all_pass(tiny, THRESHOLDS["F32"])
    noisy = compare_logits(ref, ref + rng.normal(0, 6.0, ref.shape).astype(np.float32), tokens)
    for name in ORDER:
        assert not _all_pass(noisy, THRESHOLDS[name]), name
    assert not _all_pass(noisy, THRESHOLDS["GENERIC"])


def test_one_percent_logit_scale_fails_float_types_on_logit_diff():
    ref, tokens = _peaked(100, 300, seed=6)
    c = compare_logits(ref, ref * np.float32(1.01), tokens)
    failed = {n for n, ok, _ in judge(c, THRESHOLDS["F32"]) if not ok}
    assert "rel_logit_diff" in failed
    assert _all_pass(c, THRESHOLDS["Q8_0"])  # quantised types carry no raw-logit limit


def test_non_finite_test_logits_fail_and_serialise():
    ref, tokens = _peaked(20, 30)
    test = ref.copy()
    test[3, 7] = np.nan
    c = compare_logits(ref, test, tokens)
    assert not c.finite
    failed = {n for n, ok, _ in judge(c, thresholds_for("q4_k_m")) if not ok}
    assert {"finite", "mean_kld", "p99_kld"} <= failed
    d = c.to_dict()
    json.dumps(d, allow_nan=False)  # NaN became None
    assert d["finite"] is False and d["mean_kld"] is None
    ok = compare_logits(ref, ref, tokens).to_dict()
    assert ok["rel_logit_diff"] == 0.0 and json.loads(json.dumps(ok, allow_nan=False)) == ok


@pytest.mark.parametrize(
    "ref_shape,test_shape,n_tokens,bad_token",
    [
        ((5, 10), (5, 11), 5, None),
        ((5, 10), (5, 10), 4, None),
        ((1, 10), (1, 10), 1, None),
        ((5, 10), (5, 10), 5, 10),
        ((10,), (10,), 1, None),
    ],
)
def test_bad_inputs_raise(ref_shape, test_shape, n_tokens, bad_token):
    tokens = [0] * n_tokens
    if bad_token is not None:
        tokens[-1] = bad_token
    with pytest.raises(InputError):
        compare_logits(np.zeros(ref_shape, np.float32), np.zeros(test_shape, np.float32), tokens)


def test_non_finite_reference_is_bad_input():
    ref, tokens = _peaked(5, 10)
    ref[0, 0] = np.inf
    with pytest.raises(InputError):
        compare_logits(ref, ref, tokens)


def test_threshold_table():
    assert set(ORDER) | {"GENERIC"} == set(THRESHOLDS)
    for better, worse in zip(ORDER, ORDER[1:]):
        b, w = THRESHOLDS[better], THRESHOLDS[worse]
        assert b.max_mean_kld <= w.max_mean_kld and b.max_p99_kld <= w.max_p99_kld
        assert b.min_same_top1 >= w.min_same_top1
        assert b.max_ln_ppl_ratio <= w.max_ln_ppl_ratio
    assert all(THRESHOLDS[n].max_rel_logit_diff is not None for n in ("F32", "F16", "BF16"))
    assert all(THRESHOLDS[n].max_rel_logit_diff is None for n in ORDER[3:])
    assert thresholds_for("q4_k_m") is THRESHOLDS["Q4_K_M"]
    assert thresholds_for("MOSTLY_Q8_0") is THRESHOLDS["Q8_0"]
    assert thresholds_for("IQ4_XS") is THRESHOLDS["IQ4_XS"]
    assert thresholds_for("TQ1_0") is THRESHOLDS["GENERIC"]


def test_gross_limits_lie_beyond_the_thresholds_and_loosen_with_fewer_bits():
    assert set(GROSS_LIMITS) == set(THRESHOLDS)
    for name, t in THRESHOLDS.items():
        g = GROSS_LIMITS[name]
        assert g.max_mean_kld > t.max_mean_kld and g.min_same_top1 < t.min_same_top1, name
        assert g.max_ln_ppl_ratio > t.max_ln_ppl_ratio, name
    for better, worse in zip(ORDER, ORDER[1:]):
        b, w = GROSS_LIMITS[better], GROSS_LIMITS[worse]
        assert b.max_mean_kld <= w.max_mean_kld and b.min_same_top1 >= w.min_same_top1, (better, worse)
        assert b.max_ln_ppl_ratio <= w.max_ln_ppl_ratio, (better, worse)
    assert gross_limits("MOSTLY_Q4_K_M") is GROSS_LIMITS["Q4_K_M"] and gross_limits("TQ1_0") is GROSS_LIMITS["GENERIC"]


def test_grade_warns_within_the_gross_limits_and_fails_beyond_them_or_with_the_gate():
    ref, tokens = _peaked(200, 500, seed=7)
    rng = np.random.default_rng(8)
    # a little noise: over Q8_0's thresholds, within its gross limits
    mild = compare_logits(ref, ref + rng.normal(0, 0.3, ref.shape).astype(np.float32), tokens)
    t, g = THRESHOLDS["Q8_0"], GROSS_LIMITS["Q8_0"]
    assert t.max_mean_kld < mild.mean_kld < g.max_mean_kld, mild.mean_kld
    status = {n: s for n, s, _ in grade(mild, t, "Q8_0", gate=False)}
    assert status["mean_kld"] == "warn" and "fail" not in status.values(), status
    assert {n: s for n, s, _ in grade(mild, t, "Q8_0", gate=True)}["mean_kld"] == "fail"
    # another model's logits (confident, about other tokens): every figure far outside, a failure without the
    # gate, even at Q2_K
    other, _ = _peaked(200, 500, seed=9)
    far = compare_logits(ref, 5 * other, tokens)
    print(f"another model: mean KLD {far.mean_kld:.3g}, same top-1 {far.same_top1:.1f}%")
    for type_name in ("Q8_0", "Q2_K", "GENERIC"):
        verdict = {n: (s, d) for n, s, d in grade(far, thresholds_for(type_name), type_name, gate=False)}
        for name in ("mean_kld", "same_top1", "ppl_ratio"):
            assert verdict[name][0] == "fail" and "far outside any honest" in verdict[name][1], (type_name, verdict)


def test_grade_judges_against_summaries_and_nan_is_gross():
    """`validate --against` passes its summary (a dict); a NaN figure (NaN logits) fails, flags or not."""
    m = {"mean_kld": 0.001, "p99_kld": 0.01, "same_top1": 97.0, "ppl_ref": 10.0, "ppl_test": 10.05}
    assert all(s == "pass" for _, s, _ in grade(m, THRESHOLDS["Q8_0"], "Q8_0", gate=True))
    bad = {**m, "mean_kld": float("nan"), "ppl_test": None}
    status = {n: s for n, s, _ in grade(bad, THRESHOLDS["Q8_0"], "Q8_0", gate=False)}
    assert status["mean_kld"] == "fail" and status["ppl_ratio"] == "fail", status
