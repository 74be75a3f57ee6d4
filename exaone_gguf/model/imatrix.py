"""`exaone-gguf imatrix SRC_DIR -o imatrix.gguf`: llama-imatrix's importance matrix, from the source checkpoint.

The float32 reference forward (exaone_gguf.model) runs over the calibration text in chunks of `ctx` tokens,
as llama-imatrix's compute_imatrix does: the text is tokenized whole (BOS first when the tokenizer adds one),
cut into len // ctx chunks, and each chunk's first token becomes BOS. Every projection inside the blocks
(`linear`, observed through ops.LINEAR_OBSERVERS) adds its input's per-column sum of squares and its token
count to the tensor's entry, under the tensor's GGUF name (a MoE's expert products per expert: the rows routed
to expert e add to row e of `ffn_{gate,up,down}_exps`, as llama-imatrix's MUL_MAT_ID collection does, with one
count per expert); the output head is left out, as llama-imatrix does without --process-output (and is not
computed: ops.without_logits).

Chunks run a few at a time as one batch of independent sequences (forward's `segments`: positions restart and
attention stays within each chunk, so the sums are those of one chunk at a time up to float32 rounding): each
weight is widened from BF16 once per group instead of once per chunk, and the products are bigger. The forward
runs layer by layer, so memory is one layer's weights plus one group's activations (bounded by GROUP_TOKENS and
GROUP_BYTES).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from exaone_gguf.errors import InputError
from exaone_gguf.families import load_checkpoint
from exaone_gguf.gguf_io.writer import check_output_path
from exaone_gguf.model import forward, ops
from exaone_gguf.model.texts import checkpoint_calibration_text, read_text_file
from exaone_gguf.quantize.imatrix import write_imatrix

MIN_CTX = 16  # llama-imatrix ignores matrix products of fewer than 16 tokens

# Bounds on one group of chunks run together: tokens, and estimated float32 activations (chunks_per_group).
GROUP_TOKENS = 4096
GROUP_BYTES = 512 * 2**20


@dataclass
class ImatrixResult:
    output: Path
    n_tokens: int
    chunks: int
    ctx: int
    n_entries: int
    dataset: str
    file_size: int = 0
    entries: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "output": str(self.output),
            "n_tokens": self.n_tokens,
            "chunks": self.chunks,
            "ctx": self.ctx,
            "n_entries": self.n_entries,
            "dataset": self.dataset,
            "file_size": self.file_size,
        }


# Rows squared in float32 at a time before their sums join the float64 totals (a float64 copy of every input took
# ten times as long, and the sums agree to float32 rounding).
SUM_ROWS = 256


class _Collector:
    """Per GGUF tensor: float64 sums of squared inputs [n_mat, ne0] and input rows [n_mat] (n_mat = 1, or the
    expert count of a 3-D expert tensor: llama-imatrix's MUL_MAT_ID layout, one row per expert)."""

    def __init__(self, source: Path | str = "the source") -> None:
        self.source = source
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (input, its sums): q/k/v and gate/up share one

    def __call__(self, name: str, x: np.ndarray, expert: tuple[int, int] | None = None) -> None:
        """`name`: the GGUF weight the reference forward multiplies `x` with (the output head is skipped, as
        llama-imatrix skips it); `expert`: (index, expert count) when `x` are the rows routed to one expert of a
        3-D expert tensor."""
        if not name.startswith("blk."):
            return
        e, n_mat = expert if expert is not None else (0, 1)
        x2 = x.reshape(-1, x.shape[-1])
        if self._last is not None and self._last[0] is x:  # the forwards never change an array once read
            s = self._last[1]
        else:
            s = np.zeros(x2.shape[1])
            for start in range(0, len(x2), SUM_ROWS):
                rows = x2[start : start + SUM_ROWS]
                s += np.einsum("ij,ij->j", rows, rows)
            if not np.all(np.isfinite(s)):
                raise InputError(
                    f"{self.source}: the activations entering {name} are not finite (their squares overflow "
                    "float32, or the weights hold inf or NaN); check the checkpoint's weights."
                )
            self._last = (x, s)
        if name not in self.sums:
            self.sums[name] = np.zeros((n_mat, x2.shape[1]))
            self.counts[name] = np.zeros(n_mat, np.int64)
        self.sums[name][e] += s
        self.counts[name][e] += x2.shape[0]


def chunks_per_group(spec, ctx: int) -> int:
    """How many chunks run through the forward together as one batch of independent sequences (each weight is
    widened once per group, and the products are bigger): as many as fit GROUP_TOKENS tokens and GROUP_BYTES of
    float32 activations, counted as 4 hidden-wide and 6 FFN-wide rows per token (the widest moment: the FFN's
    input, gate, up, the SiLU's temporaries and their product), and at least one."""
    per_token = 4 * (4 * spec.hidden_size + 6 * spec.intermediate_size)
    return max(1, min(GROUP_TOKENS // ctx, GROUP_BYTES // (per_token * ctx)))


def chunk_tokens(ids: list[int], ctx: int, chunks: int | None, bos: int | None) -> list[list[int]]:
    """llama-imatrix's chunks: len(ids) // ctx of them (at most `chunks`), the first token of each set to BOS
    when the tokenizer adds BOS (`bos` not None)."""
    n = len(ids) // ctx
    if chunks is not None:
        n = min(n, chunks)
    out = []
    for i in range(n):
        c = list(ids[i * ctx : (i + 1) * ctx])
        if bos is not None:
            c[0] = bos
        out.append(c)
    return out


def tokenize(ckpt, text: str, parse_special: bool = True) -> tuple[list[int], int | None]:
    """(ids with BOS first when the tokenizer adds one, the BOS id or None). parse_special: special tokens
    written in the text (the built-in text's chat markers) are those tokens; otherwise plain text, as
    llama-imatrix reads its file without --parse-special (tokens not marked special are matched either way,
    as llama.cpp matches its user-defined tokens)."""
    tok = ckpt.tokenizer
    reference = tok.build_reference()
    reference.encode_special_tokens = not parse_special
    ids = list(reference.encode(text, add_special_tokens=False).ids)
    bos = tok.bos_token_id if tok.add_bos_token else None
    if tok.add_bos_token and bos is None:
        raise InputError(f"{ckpt.path}: the tokenizer adds a BOS token but names none; fix tokenizer_config.json.")
    return ([bos] + ids if bos is not None else ids), bos


def collect_imatrix(
    src: Path | str,
    out: Path | str,
    *,
    text: Path | str | None = None,
    ctx: int = 512,
    chunks: int | None = None,
    parse_special: bool = False,
    threads: int = 1,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImatrixResult:
    """Collect the importance matrix of the checkpoint `src` over `text` (default: the built-in calibration
    text) and write it to `out` in llama-imatrix's GGUF format. progress(chunks done, chunks in all).
    `parse_special`: special tokens written in `text` are read as tokens (llama-imatrix's --parse-special);
    the built-in text's chat turns always are."""
    from threadpoolctl import threadpool_limits

    src, out = Path(src), Path(out)
    if ctx < MIN_CTX:
        raise InputError(f"--ctx {ctx}: give at least {MIN_CTX} tokens (llama-imatrix ignores shorter products).")
    if chunks is not None and chunks < 1:
        raise InputError(f"--chunks {chunks}: give a positive number of chunks.")
    ckpt = load_checkpoint(src)
    check_output_path(out, [src] + ([Path(text)] if text else []), force)
    if text is not None:
        body, dataset = read_text_file(text, "calibration"), str(text)
    else:
        body = checkpoint_calibration_text(ckpt.tokenizer)
        dataset = "exaone-gguf built-in calibration text"
    ids, bos = tokenize(ckpt, body, parse_special=parse_special or text is None)
    parts = chunk_tokens(ids, ctx, chunks, bos)
    if not parts:
        src_name = text if text is not None else "the built-in calibration text"
        raise InputError(
            f"{src_name}: tokenizes to {len(ids)} tokens, fewer than one chunk of --ctx {ctx}; "
            "give a longer text or a smaller --ctx."
        )
    collector = _Collector(src)
    per_group = chunks_per_group(ckpt.spec, ctx)
    ops.LINEAR_OBSERVERS.append(collector)
    try:
        with threadpool_limits(limits=threads), ops.without_logits():
            for i in range(0, len(parts), per_group):
                group = parts[i : i + per_group]  # one forward, positions and attention restarting per chunk
                forward(ckpt, [t for part in group for t in part], segments=[len(part) for part in group])
                if progress:
                    progress(i + len(group), len(parts))
    finally:
        ops.LINEAR_OBSERVERS.remove(collector)
    stats = {n: (collector.sums[n].astype(np.float32), collector.counts[n].astype(np.float32)) for n in collector.sums}
    size = write_imatrix(out, stats, [dataset], len(parts), ctx)
    return ImatrixResult(out, len(parts) * ctx, len(parts), ctx, len(stats), dataset, size, sorted(stats))
