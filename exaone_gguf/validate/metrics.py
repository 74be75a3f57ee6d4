"""Logit comparison between a reference and a test model, in the manner of `llama-perplexity --kl-divergence`.

Row i of a logit matrix is the model's prediction for token i + 1, so the T - 1 rows 0..T-2 are scored
against tokens[1:]; the last row predicts a token we do not have. Distribution statistics (KL divergence,
same top-1, delta-p, perplexity) use those scored rows; the raw logit differences use every row.

Thresholds (the numbers behind `THRESHOLDS`)
--------------------------------------------
The limits answer "does this file keep the fidelity its type usually gives?". A broken file is told from a
rounded one by the tensor and structure checks (STRUCTURE_LIMITS below, tensor_check.py); missing these
thresholds is a warning unless validate runs with --quality-gate or a --threshold, because how much a type
costs depends on the model: the tiny test models of `make-tiny` are far more sensitive to weight rounding
than trained multi-billion-parameter models, and more so at other widths and seeds. Measured on the four tiny families
(256 tokens of the built-in text), worst family per type: Q8_0 mean KLD 0.004 / same top-1 94 %,
Q6_K 0.027 / 88 %, Q5_K_M 0.053 / 88 %, Q4_K_M 0.16 / 80 %, Q4_0 0.26 / 76 %, Q3_K_M 0.58 / 65 %,
Q2_K 2.3 / 48 %. The limits sit at about twice those figures. For comparison, published llama.cpp
tables for 7-8B models give Q8_0 ~1e-3, Q6_K ~3e-3, Q5_K_M ~6e-3, Q4_K_M ~3e-2, Q4_0 ~5e-2: on real
models, tighten with `--threshold max_mean_kld=...` for a stricter release gate.

Float types also bound the raw logits: `max_rel_logit_diff` is max |dlogit| / max |reference logit|.
The runner keeps the KV cache in F32, so an F32 file agrees with the float32 reference to ~1e-6
(tiny models) and 2e-4 still catches one weight tensor scaled by 1 %. llama.cpp rounds activations
to F16/BF16 inside matrix products with such weights, hence 2e-2 and 5e-2 for those types.

`judge` treats NaN as a failure (every comparison with NaN is false), so non-finite test logits fail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np

from exaone_gguf.errors import InputError
from exaone_gguf.model.ops import log_softmax

ROW_CHUNK = 32  # rows converted to float64 at a time: [32, 102400] f64 is 26 MB (a few such temporaries live)


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


def compare_logits(ref: np.ndarray, test: np.ndarray, tokens: list[int]) -> LogitComparison:
    """Compare test logits [T, V] with reference logits [T, V] for the token sequence that produced them."""
    ref, test = np.asarray(ref), np.asarray(test)
    if ref.ndim != 2 or ref.shape != test.shape:
        raise InputError(f"logit comparison: shapes differ or are not 2-D (reference {ref.shape}, test {test.shape}).")
    n, vocab = ref.shape
    if len(tokens) != n or n < 2:
        raise InputError(
            f"logit comparison: need T >= 2 logit rows and one token per row, got {n} rows, {len(tokens)} tokens."
        )
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
    max_ln_ppl_ratio: float  # ln(PPL(test) / PPL(reference))
    max_rel_logit_diff: float | None = None  # float types only: quantised logits legitimately move more


THRESHOLDS: dict[str, Thresholds] = {
    t.name: t
    for t in [
        Thresholds("F32", 1e-4, 1e-3, 99.0, 1e-3, 2e-4),
        Thresholds("F16", 5e-4, 5e-3, 98.0, 5e-3, 2e-2),
        Thresholds("BF16", 5e-3, 3e-2, 95.0, 2e-2, 5e-2),
        Thresholds("Q8_0", 1e-2, 6e-2, 90.0, 5e-2),
        Thresholds("Q6_K", 5e-2, 0.3, 85.0, 0.15),
        Thresholds("Q5_K_M", 0.1, 0.7, 82.0, 0.3),
        Thresholds("Q5_K_S", 0.1, 0.7, 82.0, 0.3),
        Thresholds("Q5_1", 0.1, 0.7, 82.0, 0.3),
        Thresholds("Q5_0", 0.15, 1.2, 78.0, 0.4),
        Thresholds("Q4_K_M", 0.3, 2.0, 75.0, 0.8),
        Thresholds("Q4_K_S", 0.3, 2.0, 75.0, 0.8),
        Thresholds("Q4_1", 0.5, 3.5, 70.0, 1.0),
        Thresholds("Q4_0", 0.5, 3.5, 70.0, 1.0),
        Thresholds("IQ4_XS", 0.5, 3.5, 70.0, 1.0),
        Thresholds("Q3_K_M", 1.2, 5.0, 55.0, 1.2),
        Thresholds("Q2_K", 4.0, 15.0, 35.0, 1.5),
        Thresholds("GENERIC", 0.5, 3.5, 70.0, 1.0),  # any other type: as loose as the 4-bit types
    ]
}


def thresholds_for(type_name: str) -> Thresholds:
    """Limits for a GGUF file type name ('q4_k_m', 'BF16', 'MOSTLY_Q8_0' ...), GENERIC when unknown."""
    key = type_name.upper().removeprefix("MOSTLY_")
    return THRESHOLDS.get(key, THRESHOLDS["GENERIC"])


def _figure(c: LogitComparison | Mapping, key: str) -> float:
    """A figure of a LogitComparison or of `validate --against`'s summary (a mapping); None counts as NaN."""
    v = c.get(key) if isinstance(c, Mapping) else getattr(c, key)
    return math.nan if v is None else float(v)


def ln_ppl_ratio(c: LogitComparison | Mapping) -> float:
    """ln(PPL(test) / PPL(reference)): the perplexity the file adds, in nats per token."""
    with np.errstate(all="ignore"):
        return float(np.log(np.float64(_figure(c, "ppl_test")) / _figure(c, "ppl_ref")))


def judge(c: LogitComparison | Mapping, t: Thresholds) -> list[tuple[str, bool, str]]:
    """(check name, passed, one-line detail) for each limit; NaN never passes. `c`: a LogitComparison or
    `validate --against`'s summary (no raw logits there: the raw-logit limit is left out)."""
    finite = bool(c.get("finite", True)) if isinstance(c, Mapping) else c.finite
    kld, p99, top1, ppl = _figure(c, "mean_kld"), _figure(c, "p99_kld"), _figure(c, "same_top1"), ln_ppl_ratio(c)
    checks = [
        ("finite", finite, "all test logits finite" if finite else "test logits contain NaN or infinity"),
        ("mean_kld", kld <= t.max_mean_kld, f"mean KLD {kld:.3g} (max {t.max_mean_kld:g})"),
        ("p99_kld", p99 <= t.max_p99_kld, f"99th percentile KLD {p99:.3g} (max {t.max_p99_kld:g})"),
        ("same_top1", top1 >= t.min_same_top1, f"same top-1 {top1:.2f}% (min {t.min_same_top1:g}%)"),
        (
            "ppl_ratio",
            ppl <= t.max_ln_ppl_ratio,
            f"PPL {_figure(c, 'ppl_test'):.4g} vs {_figure(c, 'ppl_ref'):.4g}: ln ratio {ppl:+.3g} "
            f"(max {t.max_ln_ppl_ratio:g})",
        ),
    ]
    if t.max_rel_logit_diff is not None and not isinstance(c, Mapping):
        rel = c.rel_logit_diff
        checks.append(
            (
                "rel_logit_diff",
                rel <= t.max_rel_logit_diff,
                f"max |dlogit| / max |logit| {rel:.3g} (max {t.max_rel_logit_diff:g})",
            )
        )
    return [(name, bool(ok), detail) for name, ok, detail in checks]


# Gross limits: fidelity no honest file of the type gives, failed without flags (the thresholds above stay the
# --quality-gate). Measured with the reference forward on the source against llama.cpp on the file (256 tokens of the
# built-in text; mean KLD / same top-1 / ln PPL ratio):
#   SmolLM2-135M-Instruct (scripts/smollm2_checkpoint.py; EXAONE 3.x layout, Llama layout where it differs):
#     BF16 1.6e-4 / 99.6 % (Llama 98.8 %) / -0.002; Q8_0 0.0073 (Llama 0.0078) / 95.3 % (94.5 %) / -0.001;
#     Q6_K 0.027 / 90.6 % / 0.016; Q4_K_M 0.092 / 78.0 % / 0.074 (Llama 0.082); imatrix IQ4_XS 0.20 / 69.0 % / 0.15;
#     Q3_K_M 0.23 / 67.5 % / 0.22; Q2_K 0.69 / 46.7 % / 0.31 (Llama 0.69 / 47.1 % / 0.31)
#   tiny families (exaone3, exaone3.5, exaone4, exaone4-hybrid, llama; the tests' sizes and hidden 512 / seed 1),
#     worst per type: BF16 6e-4 / 98.8 %; Q8_0 0.0069 / 93.7 % / 0.029; Q6_K 0.048 / 88.2 % / 0.087;
#     Q4_K_M 0.66 / 72.6 % / 0.41; Q3_K_M 1.8 / 58.8 % / 0.38; Q2_K 7.2 / 23.9 % / 0.83 (llama, hidden 512; 7.7 on
#     the first 128 tokens)
#   tiny K-EXAONE (MoE: a router flip moves everything after it; seeds 0 and 1, worst): Q8_0 0.45 / 89.0 % / 0.11;
#     Q4_K_M 4.7 / 38.0 % / 0.27; Q2_K 15.7 / 5.1 % / 0.55 (a random MoE at 2 bits keeps little of itself)
#   another model, same vocabulary (a seed-1 tiny file against seed 0's source, each family, Q8_0): mean KLD 31-36,
#     same top-1 0 %; `--against`, a random 2-layer network with SmolLM2's vocabulary against SmolLM2: see
#     tests/test_validate_against.py (the tiny random networks find the text about equally unlikely, so there the
#     PPL ratio says nothing; KLD and top-1 do).
# The quantized limits sit 3-5x past the worst honest KLD of the type (the tiny MoE's; 1.6x at Q2_K, whose honest tiny
# MoE file comes within a factor 2 of another model: there top-1 and KLD can only catch a file that is no model of
# its source at all), PPL ratio 3x or more past, top-1 about half the worst honest; the float types 20-80x past the
# worst honest KLD.
@dataclass(frozen=True)
class GrossLimits:
    """Fidelity far outside what any honest file of a type gives: beyond one of these the file is broken (another
    model, damaged weights), and validate fails it without --quality-gate. Not overridable."""

    name: str
    max_mean_kld: float
    min_same_top1: float  # percent
    max_ln_ppl_ratio: float


GROSS_LIMITS: dict[str, GrossLimits] = {
    g.name: g
    for g in [
        GrossLimits("F32", 0.01, 95.0, 0.05),
        GrossLimits("F16", 0.02, 90.0, 0.1),
        GrossLimits("BF16", 0.05, 85.0, 0.2),
        GrossLimits("Q8_0", 2.0, 60.0, 0.5),
        GrossLimits("Q6_K", 4.0, 40.0, 0.8),
        GrossLimits("Q5_K_M", 8.0, 30.0, 1.0),
        GrossLimits("Q5_K_S", 8.0, 30.0, 1.0),
        GrossLimits("Q5_1", 8.0, 30.0, 1.0),
        GrossLimits("Q5_0", 10.0, 25.0, 1.2),
        GrossLimits("Q4_K_M", 15.0, 20.0, 1.5),
        GrossLimits("Q4_K_S", 15.0, 20.0, 1.5),
        GrossLimits("Q4_1", 15.0, 20.0, 2.0),
        GrossLimits("Q4_0", 15.0, 20.0, 2.0),
        GrossLimits("IQ4_XS", 15.0, 20.0, 2.0),
        GrossLimits("Q3_K_M", 22.0, 5.0, 2.5),
        GrossLimits("Q2_K", 25.0, 2.0, 3.0),
        GrossLimits("GENERIC", 25.0, 1.0, 4.0),  # any other type (IQ2, IQ1 ...): the loosest
    ]
}


def gross_limits(type_name: str) -> GrossLimits:
    key = type_name.upper().removeprefix("MOSTLY_")
    return GROSS_LIMITS.get(key, GROSS_LIMITS["GENERIC"])


def grade(c: LogitComparison | Mapping, t: Thresholds, type_name: str, gate: bool) -> list[tuple[str, str, str]]:
    """(check name, status, detail) for each fidelity figure: "pass" within the thresholds `t`; beyond them
    "fail" with `gate` (--quality-gate, --threshold), when not finite, or when the figure is also beyond the
    type's gross limits (far outside any honest file of `type_name`); "warn" otherwise."""
    g = gross_limits(type_name)
    gross = {  # NaN is gross
        "mean_kld": not _figure(c, "mean_kld") <= g.max_mean_kld,
        "same_top1": not _figure(c, "same_top1") >= g.min_same_top1,
        "ppl_ratio": not ln_ppl_ratio(c) <= g.max_ln_ppl_ratio,
    }
    limits = {
        "mean_kld": f"mean KLD {g.max_mean_kld:g}",
        "same_top1": f"same top-1 {g.min_same_top1:g}%",
        "ppl_ratio": f"ln PPL ratio {g.max_ln_ppl_ratio:g}",
    }
    out = []
    for name, ok, detail in judge(c, t):
        if ok:
            out.append((name, "pass", detail))
        elif gross.get(name, False):
            out.append((name, "fail", f"{detail}; beyond {limits[name]}, far outside any honest {g.name} file"))
        else:
            out.append((name, "fail" if gate or name == "finite" else "warn", detail))
    return out


@dataclass(frozen=True)
class StructureLimit:
    """Limits on the structure comparison (reference forward on the file's own weights vs llama.cpp on the file)."""

    name: str
    max_rel_logit_diff: float  # max |dlogit| / max |logit|
    max_mean_kld: float


# Measured on honest files of the five tiny families (the tests' sizes and hidden 512 / seed 1, 128 tokens; the
# reference rounding product inputs as llama.cpp does), worst case of max |dlogit| / max |logit| and mean KLD:
# F32 8.5e-7 / 1.5e-11, BF16 1.7e-3 / 3.3e-5, F16 3.7e-4 / 1.5e-6, Q8_0 1.9e-2 / 4.0e-3, Q4_K_M 2.7e-2 / 5.3e-3,
# Q2_K 2.5e-2 / 5.1e-3. The limits sit about 3x above (the quantized types share one: Q8_0 measures no better
# than the K types). A wrong RoPE base measures KLD 0.03 (the tiny hybrid: 8-token windows) to 1.2, a wrong
# sliding window 0.7. F32 was raised to 2e-5 for the trained SmolLM2-135M (30 layers): 5.4e-6 / 2.4e-11.
STRUCTURE_LIMITS: dict[str, StructureLimit] = {
    s.name: s
    for s in [
        StructureLimit("F32", 2e-5, 1e-10),
        StructureLimit("F16", 5e-3, 2e-4),
        StructureLimit("BF16", 5e-3, 2e-4),
        StructureLimit("GENERIC", 8e-2, 2e-2),  # every quantized type
    ]
}


# A deep, wide network amplifies the float32 summation-order differences between numpy and ggml: they flip a few
# BF16 / F16 roundings of the activations before each product, and the flips grow layer by layer. Make-tiny
# EXAONE 4.0 1.2B shapes (128 tokens), honest BF16 file, llama.cpp vs the reference and, beside it, the
# reference summing its products in float64 vs float32 (the noise floor):
#   30 layers, hidden 256:  max rel 3.5e-3 / mean KLD 1.9e-4;  floor 3.8e-3 / 1.8e-4
#   10 layers, hidden 512:  3.4e-3 / 2.4e-4;                   floor 3.5e-3 / 2.8e-4
#   30 layers, hidden 512:  4.0e-3 / 2.4e-4;                   floor 4.1e-3 / 2.3e-4
#   30 layers, hidden 1024: 5.4e-3 / 3.6e-4;                   floor 5.3e-3 / 4.1e-4
#   30 layers, hidden 2048 (the 1.2B itself): 6.1e-3 / 4.8e-4; floor 5.7e-3 / 4.1e-4
#   tiny K-EXAONE (MoE, 16-bit inputs before every expert): 5.9e-3 / 3.6e-4; floor 5.8e-3 / 3.2e-4
# (F16 the same, 8x lower.) The floor tracks the honest difference within 25 %, so a file over its static limit
# is judged against NOISE_FLOOR_FACTOR x the floor instead; a wrong RoPE base or window measures KLD 0.03 and up,
# a hundred times above.
# Quantized files round their activations too (Q8_K before K-quant and IQ4_XS products, Q8_0 / Q8_1 before the
# legacy types: reference/weights.py rounds them with ggml's own kernels, as ggml-cpu's vec_dot_type says), and a
# trained network's outlier channels make each Q8 step coarse, so the flips cost more than on random weights.
# SmolLM2-135M, 256 tokens, honest files, structure vs floor (max rel / mean KLD), EXAONE 3.x layout:
#   BF16 0.014 / 2.1e-4 vs 0.013 / 2.1e-4; Q8_0 0.055 / 6.0e-3 vs 0.066 / 5.3e-3; Q6_K 0.069 / 0.011 vs 0.062 / 9.3e-3
#   Q4_K_M 0.092 / 9.9e-3 vs 0.096 / 0.010; IQ4_XS (imatrix) 0.074 / 0.011 vs 0.065 / 9.9e-3;
#   Q3_K_M 0.063 / 0.011 vs 0.066 / 0.010; Q2_K 0.087 / 0.014 vs 0.085 / 0.011
#   Llama layout: BF16 0.013 / 1.9e-4 vs 0.014 / 2.2e-4; Q8_0 0.061 / 6.3e-3 vs 0.046 / 5.2e-3;
#   Q4_K_M 0.105 / 0.011 vs 0.079 / 9.4e-3; Q2_K 0.091 / 0.014 vs 0.074 / 0.011
# Tiny K-EXAONE (MoE, routes forced to llama.cpp's): Q8_0 0.038 / 0.012, Q4_K_M (seed 1) 0.047 / 0.014, Q2_K 0.040 /
# 0.016 against a floor of 0.027 / 0.0043 (the floor underestimates MoE files): the static quantized KLD limit is
# 2e-2 (it was 1.5e-2), still under the tiny hybrid's wrong-RoPE 0.033.
# The floor matches the honest difference within 35 % at every type, so every type that rounds its activations
# uses it.
NOISE_FLOOR_FACTOR = 3.0
# The most the floor may raise a limit, about 4x the worst honest file measured (the real network's BF16 0.014 /
# 2.1e-4; quantized 0.105 / 0.014): a file whose own computation amplifies rounding past it is not judged against its
# own noise. The tiny EXAONE 4.0 at BF16 with every q/k norm weight x30 (attention 900x sharper) measures 0.13 /
# 0.010 against a floor of 0.12 / 0.012 (3x would pass it) and fails here.
NOISE_FLOOR_CEILING: dict[str, StructureLimit] = {
    s.name: s
    for s in [
        StructureLimit("F16", 1e-2, 1e-3),
        StructureLimit("BF16", 5e-2, 2e-3),
        StructureLimit("GENERIC", 0.4, 0.06),
    ]
}


def structure_limit(type_name: str) -> StructureLimit:
    key = type_name.upper().removeprefix("MOSTLY_")
    return STRUCTURE_LIMITS.get(key, STRUCTURE_LIMITS["GENERIC"])


def judge_structure(c: LogitComparison, s: StructureLimit) -> tuple[bool, str]:
    rel = c.rel_logit_diff
    ok = c.finite and rel <= s.max_rel_logit_diff and c.mean_kld <= s.max_mean_kld
    detail = (
        f"max |dlogit| / max |logit| {rel:.3g} (max {s.max_rel_logit_diff:g}), mean KLD {c.mean_kld:.3g} "
        f"(max {s.max_mean_kld:g}), same top-1 {c.same_top1:.1f}%"
    )
    return bool(ok), detail if c.finite else "llama.cpp's logits contain NaN or infinity"


def rounds_activations(type_name: str) -> bool:
    """Files whose products llama.cpp feeds rounded activations (F16 / BF16, or Q8_0 / Q8_1 / Q8_K before
    quantized weights): the rounding whose flips the noise floor measures. F32 files have none."""
    return type_name.upper().removeprefix("MOSTLY_") != "F32"


def limit_over_floor(s: StructureLimit, floor: LogitComparison, k: float = NOISE_FLOOR_FACTOR) -> StructureLimit:
    """The static limit `s` raised to k x the noise floor `floor` (the reference against itself summed in
    float64) where the floor is higher: how much this network amplifies the rounding of its activations; never
    above the type's NOISE_FLOOR_CEILING (a file whose own computation amplifies rounding past it, a chaotic
    network, is not judged against its own noise)."""
    top = NOISE_FLOOR_CEILING.get(s.name, s)
    return replace(
        s,
        max_rel_logit_diff=min(max(s.max_rel_logit_diff, k * floor.rel_logit_diff), top.max_rel_logit_diff),
        max_mean_kld=min(max(s.max_mean_kld, k * floor.mean_kld), top.max_mean_kld),
    )


def floor_capped(s: StructureLimit, floor: LogitComparison, k: float = NOISE_FLOOR_FACTOR) -> bool:
    """Whether k x `floor` lies above the ceiling `s` (a limit_over_floor result) was held to."""
    return k * floor.rel_logit_diff > s.max_rel_logit_diff or k * floor.mean_kld > s.max_mean_kld
