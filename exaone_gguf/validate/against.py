"""`validate MODEL --against BASE.gguf`: a quantized file against a higher-precision GGUF of the same model.

The comparison `llama-perplexity --kl-divergence-base` + `--kl-divergence` makes, computed the way
tools/perplexity/perplexity.cpp computes it, so the figures can be set beside llama.cpp's own:

- the text is tokenized by BASE with its special tokens (BOS when the vocabulary adds one) and cut into
  chunks of `n_ctx` tokens (at most `n_chunks`; llama.cpp wants at least 2 x n_ctx tokens);
- each chunk is evaluated from an empty KV cache, its first token replaced by BOS when the vocabulary adds
  BOS; the logits of positions n_ctx/2 .. n_ctx-2 are scored against the next token (n_ctx - 1 - n_ctx/2
  tokens per chunk: the model always has half a window of context);
- BASE's log-probabilities are stored as llama.cpp stores them in its logits file: 16-bit steps over the
  16 nats below the top logit (lower ones clamp to the bottom); KLD sums the base tokens above -16 nats,
  PPL(base) and "same top p" use those stored values; sums in double, per-token values in float;
- mean / median / percentiles of KLD and Delta-p as llama.cpp prints them (median: the mean of the middle two).

BASE runs first and its stored log-probabilities go to a temporary file; then MODEL runs. One model is in
memory at a time (peak RSS: the larger model plus one chunk of logits). Both run in llama.cpp through
llama-cpp-python with llama-perplexity's defaults (F16 KV cache, flash attention on the CPU, ubatch 512).
"""

from __future__ import annotations

import ctypes
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exaone_gguf.cores import resolve_threads
from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.split import open_model
from exaone_gguf.model.texts import load_text
from exaone_gguf.validate.metadata_check import file_type_name
from exaone_gguf.validate.metrics import grade, thresholds_for
from exaone_gguf.validate.report import Report
from exaone_gguf.validate.results import CheckResult

DEFAULT_CTX = 512  # llama-perplexity's default -c
LOG_RANGE = 16.0  # llama.cpp keeps the 16 nats below the top logit


@dataclass
class KLDStats:
    """llama-perplexity's sums (kl_divergence_result) and the per-token values it sorts."""

    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_base: float = 0.0
    sum_nll_base2: float = 0.0
    sum_nll_nll_base: float = 0.0
    sum_nll_stored: float = 0.0  # the model's NLL with its log-probabilities clamped as the base's are stored
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_p_diff: float = 0.0
    sum_p_diff2: float = 0.0
    sum_p_diff4: float = 0.0
    n_same_top: int = 0
    count: int = 0
    kld_values: list[np.ndarray] = field(default_factory=list)
    p_diff_values: list[np.ndarray] = field(default_factory=list)

    def summary(self, n_ctx: int, n_chunks: int) -> dict:
        n = self.count
        kld = np.sort(np.concatenate(self.kld_values)) if self.kld_values else np.zeros(0, np.float32)
        dp = np.sort(np.concatenate(self.p_diff_values)) if self.p_diff_values else np.zeros(0, np.float32)
        log_ppl, _ = _mean_unc(self.sum_nll, self.sum_nll2, n)
        log_base, _ = _mean_unc(self.sum_nll_base, self.sum_nll_base2, n)
        mean_kld, mean_kld_unc = _mean_unc(self.sum_kld, self.sum_kld2, n)
        mse, _ = _mean_unc(self.sum_p_diff2, self.sum_p_diff4, n)
        same = self.n_same_top / n if n else float("nan")
        return {
            "n_ctx": n_ctx,
            "n_chunks": n_chunks,
            "n_tokens": n,
            "ppl_test": float(np.exp(log_ppl)),
            "ppl_ref": float(np.exp(log_base)),
            "ln_ppl_ratio": float(log_ppl - log_base),
            "ppl_test_stored": float(np.exp(self.sum_nll_stored / n)) if n else float("nan"),
            "mean_kld": float(mean_kld),
            "mean_kld_uncertainty": float(mean_kld_unc),
            "median_kld": _median(kld),
            "p90_kld": _percentile(kld, 0.90),
            "p95_kld": _percentile(kld, 0.95),
            "p99_kld": _percentile(kld, 0.99),
            "p99_9_kld": _percentile(kld, 0.999),
            "max_kld": float(kld[-1]) if kld.size else float("nan"),
            "min_kld": float(kld[0]) if kld.size else float("nan"),
            "mean_delta_p": float(self.sum_p_diff / n) if n else float("nan"),
            "max_delta_p": float(dp[-1]) if dp.size else float("nan"),
            "rms_delta_p": float(np.sqrt(mse)) if n else float("nan"),
            "same_top1": 100.0 * same,  # llama.cpp's "Same top p", in percent
            "max_abs_logit_diff": None,
        }


def _mean_unc(s: float, s2: float, n: int) -> tuple[float, float]:
    """llama-perplexity's mean_and_uncertainty."""
    if n < 1:
        return 0.0, 0.0
    f = s / n
    df = s2 / n - f * f
    return f, (float(np.sqrt(df / (n - 1))) if df > 0 and n > 10 else 0.0)


def _median(v: np.ndarray) -> float:
    if not v.size:
        return float("nan")
    h = v.size // 2
    return float(np.float32(0.5) * (v[h] + v[h - 1])) if v.size % 2 == 0 else float(v[h])


def _percentile(v: np.ndarray, fraction: float) -> float:
    """llama-perplexity's percentile: linear between the two neighbouring sorted values (float arithmetic)."""
    if not v.size:
        return float("nan")
    p = np.float32(fraction) * np.float32(v.size - 1)
    ip = int(p)
    p = np.float32(p - ip)
    return float((np.float32(1) - p) * v[ip] + p * v[min(ip + 1, v.size - 1)])


def _log_sum_exp(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max logit, log of the sum of expf(l - max) taken in double, as float) per row."""
    mx = logits.max(axis=1)
    sum_exp = np.exp(logits - mx[:, None]).sum(axis=1, dtype=np.float64)
    return mx, np.log(sum_exp).astype(np.float32)


def store_base(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BASE's rows as llama.cpp's logits file holds them: (uint16 steps [P, V], scale [P], min log-prob [P])."""
    mx, lse = _log_sum_exp(logits)
    mn = np.maximum(logits.min(axis=1), mx - np.float32(LOG_RANGE))
    min_log_prob = (mn - mx - lse).astype(np.float32)
    scale = ((mx - mn) / np.float32(65535)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(scale > 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
    steps = np.rint(inv[:, None] * (logits - mn[:, None]))
    q = np.where(logits > mn[:, None], steps, 0).astype(np.uint16)
    return q, scale, min_log_prob


def score_chunk(
    logits: np.ndarray, targets: np.ndarray, q: np.ndarray, scale: np.ndarray, min_lp: np.ndarray, st: KLDStats
) -> None:
    """llama-perplexity's log_softmax(..., base_log_prob, tok, kld) for each row of one chunk."""
    rows = np.arange(len(targets))
    mx, lse = _log_sum_exp(logits)
    imax = logits.argmax(axis=1)
    nll = (mx + lse - logits[rows, targets]).astype(np.float32)
    # the same NLL with the model's log-probabilities kept over LOG_RANGE nats below its top, as BASE's are stored:
    # PPL(base) cannot exceed about exp(16) on tokens the base finds unlikely, so PPL(Q) is judged on equal terms
    floor = np.maximum(logits.min(axis=1), mx - np.float32(LOG_RANGE)) - mx - lse
    nll_stored = np.minimum(nll, -floor)
    lp_base = (scale[:, None] * q.astype(np.float32) + min_lp[:, None]).astype(np.float32)
    nll_base = (-lp_base[rows, targets]).astype(np.float32)
    top = (mx + lse).astype(np.float32)
    keep = lp_base > np.float32(-LOG_RANGE)
    terms = np.where(keep, np.exp(lp_base) * (lp_base - logits + top[:, None]), np.float32(0))
    kld = terms.sum(axis=1, dtype=np.float64)
    p_diff = (np.exp(-nll) - np.exp(-nll_base)).astype(np.float32)
    n64, b64, d64 = nll.astype(np.float64), nll_base.astype(np.float64), p_diff.astype(np.float64)
    st.sum_nll += n64.sum()
    st.sum_nll2 += (n64 * n64).sum()
    st.sum_nll_base += b64.sum()
    st.sum_nll_base2 += (b64 * b64).sum()
    st.sum_nll_nll_base += (n64 * b64).sum()
    st.sum_nll_stored += nll_stored.astype(np.float64).sum()
    st.sum_kld += kld.sum()
    st.sum_kld2 += (kld * kld).sum()
    st.sum_p_diff += d64.sum()
    st.sum_p_diff2 += (d64 * d64).sum()
    st.sum_p_diff4 += ((d64 * d64) ** 2).sum()
    st.n_same_top += int((imax == lp_base.argmax(axis=1)).sum())
    st.count += len(targets)
    st.kld_values.append(kld.astype(np.float32))
    st.p_diff_values.append(p_diff)


class _Evaluator:
    """One GGUF in llama.cpp; `chunk(tokens)` -> logits of positions n_ctx/2 .. n_ctx-2 (a fresh KV cache)."""

    def __init__(self, path: Path, n_ctx: int, threads: int) -> None:
        import llama_cpp
        from llama_cpp import Llama

        self.lc = llama_cpp
        try:
            self.llm = Llama(
                str(path),
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=min(512, n_ctx),
                logits_all=False,
                flash_attn=True,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except ValueError as e:
            raise InputError(f"{path}: llama.cpp could not load it ({e}); the file is broken or unsupported.") from None
        self.ctx = self.llm.ctx
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.bos = llama_cpp.llama_vocab_bos(vocab)
        self.n_ctx = n_ctx
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)

    def chunk(self, tokens: np.ndarray) -> np.ndarray:
        lc, b, n, first = self.lc, self.batch, self.n_ctx, self.n_ctx // 2
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        for k in range(n):
            b.token[k] = int(self.bos if (k == 0 and self.add_bos) else tokens[k])
            b.pos[k] = k
            b.n_seq_id[k] = 1
            b.seq_id[k][0] = 0
            b.logits[k] = k >= first
        b.n_tokens = n
        rc = lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc})")
        ptr = lc.llama_get_logits(self.ctx)
        out = np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=((n - first) * self.n_vocab,)
        )
        return out.reshape(n - first, self.n_vocab)[:-1].copy()  # the last position predicts past the chunk

    def close(self) -> None:
        self.lc.llama_batch_free(self.batch)
        self.llm.close()


def tokenize(base: Path, text: str) -> list[int]:
    """The text as llama-perplexity tokenizes it: BASE's vocabulary, special tokens added (BOS), none parsed."""
    from llama_cpp import Llama

    llm = Llama(str(base), vocab_only=True, verbose=False)
    try:
        return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    finally:
        llm.close()


def compare_against(
    model: Path,
    base: Path,
    tokens: list[int],
    n_ctx: int = DEFAULT_CTX,
    n_chunks: int | None = None,
    threads: int | None = None,
) -> dict:
    """llama-perplexity's KL-divergence statistics of `model` against `base` on `tokens` (see the module doc)."""
    if n_ctx < 4 or n_ctx % 2:
        raise InputError(f"--ctx {n_ctx}: give an even context of at least 4 tokens.")
    if len(tokens) < 2 * n_ctx:
        raise InputError(
            f"the evaluation text tokenizes to {len(tokens)} tokens; --against needs at least 2 x --ctx = {2 * n_ctx} "
            "(as llama-perplexity does): give a longer --text or a smaller --ctx."
        )
    n_chunk = len(tokens) // n_ctx if n_chunks is None else min(n_chunks, len(tokens) // n_ctx)
    toks = np.asarray(tokens[: n_chunk * n_ctx], dtype=np.int64).reshape(n_chunk, n_ctx)
    threads = resolve_threads(threads)
    first = n_ctx // 2
    p = n_ctx - 1 - first
    with tempfile.TemporaryDirectory(prefix="exaone-gguf-against-") as tmp:
        ev = _Evaluator(base, n_ctx, threads)
        try:
            n_vocab = ev.n_vocab
            q_all = np.memmap(Path(tmp) / "base.u16", dtype=np.uint16, mode="w+", shape=(n_chunk, p, n_vocab))
            scale_all = np.zeros((n_chunk, p), np.float32)
            min_all = np.zeros((n_chunk, p), np.float32)
            for c in range(n_chunk):
                q_all[c], scale_all[c], min_all[c] = store_base(ev.chunk(toks[c]))
        finally:
            ev.close()
        ev = _Evaluator(model, n_ctx, threads)
        try:
            if ev.n_vocab != n_vocab:
                raise InputError(
                    f"{model}: its vocabulary has {ev.n_vocab} tokens and {base} has {n_vocab}; "
                    "--against compares two files of the same model."
                )
            st = KLDStats()
            for c in range(n_chunk):
                score_chunk(ev.chunk(toks[c]), toks[c, first + 1 :], q_all[c], scale_all[c], min_all[c], st)
        finally:
            ev.close()
            del q_all
    return st.summary(n_ctx, n_chunk)


def validate_against(
    model: Path | str,
    base: Path | str,
    text: str | Path | None = None,
    n_ctx: int = DEFAULT_CTX,
    n_chunks: int | None = None,
    threshold_overrides: dict[str, float] | None = None,
    quality_gate: bool = False,
    threads: int | None = None,
) -> Report:
    """MODEL against BASE: llama-perplexity's figures and the per-type fidelity limits of MODEL's file type.

    The figures exceeding the limits warn by default (how much a quant type costs is a property of the
    model) and fail with `quality_gate` or any threshold override, or when they lie far outside any honest
    file of the type (metrics.GROSS_LIMITS: another model, a damaged file)."""
    from exaone_gguf.validate import override_thresholds

    start = time.perf_counter()
    model, base = Path(model), Path(base)
    fm, fb = open_model(model), open_model(base)
    ft, ft_base = file_type_name(fm.get("general.file_type")), file_type_name(fb.get("general.file_type"))
    thresholds = override_thresholds(thresholds_for(ft), threshold_overrides)
    report = Report(str(model), str(base), ft, "cpu", thresholds={"against": ft_base, **thresholds.__dict__})
    same_vocab = fm.get("tokenizer.ggml.tokens") == fb.get("tokenizer.ggml.tokens")
    report.checks.append(
        CheckResult(
            "against: same vocabulary",
            "pass" if same_vocab else "fail",
            f"{len(fb.get('tokenizer.ggml.tokens') or [])} tokens, identical"
            if same_vocab
            else f"{model.name} and {base.name} list different tokens: not two files of one model",
        )
    )
    if not same_vocab:
        report.seconds = time.perf_counter() - start
        return report
    m = compare_against(model, base, tokenize(base, load_text(text)), n_ctx, n_chunks, threads)
    report.metrics = m
    gate = quality_gate or bool(threshold_overrides)
    names = {"mean_kld": "mean KLD", "p99_kld": "p99 KLD", "same_top1": "same top p", "ppl_ratio": "perplexity"}
    # perplexity judged with the model's log-probabilities clamped as BASE's stored ones are (ppl_test_stored)
    for name, status, detail in grade({**m, "ppl_test": m["ppl_test_stored"]}, thresholds, ft, gate):
        if name in names:
            report.checks.append(
                CheckResult(
                    f"against {ft_base}: {names[name]}",
                    status,
                    f"{detail}; {m['n_tokens']} tokens in {m['n_chunks']} chunks of {n_ctx}",
                )
            )
    report.seconds = time.perf_counter() - start
    return report
