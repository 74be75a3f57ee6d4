"""`exaone-gguf imatrix SRC_DIR -o imatrix.gguf`: llama-imatrix's importance matrix, from the source checkpoint.

The float32 reference forward (validate.reference) runs over the calibration text in chunks of `ctx` tokens,
as llama-imatrix's compute_imatrix does: the text is tokenized whole (BOS first when the tokenizer adds one),
cut into len // ctx chunks, and each chunk's first token becomes BOS. Every projection inside the blocks
(`linear`, observed through common.LINEAR_OBSERVERS) adds its input's per-column sum of squares and its token
count to the tensor's entry, under the tensor's GGUF name (a MoE's expert products per expert: the rows routed
to expert e add to row e of `ffn_{gate,up,down}_exps`, as llama-imatrix's MUL_MAT_ID collection does, with one
count per expert); the output head is left out, as llama-imatrix does
without --process-output. One chunk is in flight at a time and the forward runs layer by layer, so memory is
one layer's weights plus one chunk's activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from exaone_gguf.checkpoint import load_checkpoint
from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.writer import check_output_path
from exaone_gguf.quantize.imatrix import write_imatrix
from exaone_gguf.validate.calibration import calibration_text
from exaone_gguf.validate.evaltext import read_text_file
from exaone_gguf.validate.reference import common as ref_common
from exaone_gguf.validate.reference import forward

MIN_CTX = 16  # llama-imatrix ignores matrix products of fewer than 16 tokens


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


class _Collector:
    """Per GGUF tensor: float64 sums of squared inputs [n_mat, ne0] and input rows [n_mat] (n_mat = 1, or the
    expert count of a 3-D expert tensor: llama-imatrix's MUL_MAT_ID layout, one row per expert)."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}

    def __call__(self, name: str, x: np.ndarray, expert: tuple[int, int] | None = None) -> None:
        """`name`: the GGUF weight the reference forward multiplies `x` with (the output head is skipped, as
        llama-imatrix skips it); `expert`: (index, expert count) when `x` are the rows routed to one expert of a
        3-D expert tensor."""
        if not name.startswith("blk."):
            return
        e, n_mat = expert if expert is not None else (0, 1)
        x2 = x.reshape(-1, x.shape[-1]).astype(np.float64)
        s = np.einsum("ij,ij->j", x2, x2)
        if not np.all(np.isfinite(s)):
            raise InputError(
                f"the source's activations entering {name} are not finite; check the checkpoint's weights."
            )
        if name not in self.sums:
            self.sums[name] = np.zeros((n_mat, x2.shape[1]))
            self.counts[name] = np.zeros(n_mat, np.int64)
        self.sums[name][e] += s
        self.counts[name][e] += x2.shape[0]


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
        tok = ckpt.tokenizer
        body = calibration_text(
            tok.chat_template, _token_text(tok, tok.bos_token_id), _token_text(tok, tok.eos_token_id)
        )
        dataset = "exaone-gguf built-in calibration text"
    ids, bos = tokenize(ckpt, body, parse_special=parse_special or text is None)
    parts = chunk_tokens(ids, ctx, chunks, bos)
    if not parts:
        src_name = text if text is not None else "the built-in calibration text"
        raise InputError(
            f"{src_name}: tokenizes to {len(ids)} tokens, fewer than one chunk of --ctx {ctx}; "
            "give a longer text or a smaller --ctx."
        )
    collector = _Collector()
    ref_common.LINEAR_OBSERVERS.append(collector)
    try:
        with threadpool_limits(limits=threads):
            for i, part in enumerate(parts):
                forward(ckpt, part)
                if progress:
                    progress(i + 1, len(parts))
    finally:
        ref_common.LINEAR_OBSERVERS.remove(collector)
    stats = {n: (collector.sums[n].astype(np.float32), collector.counts[n].astype(np.float32)) for n in collector.sums}
    size = write_imatrix(out, stats, [dataset], len(parts), ctx)
    return ImatrixResult(out, len(parts) * ctx, len(parts), ctx, len(stats), dataset, size, sorted(stats))


def _token_text(tok, token_id: int | None) -> str:
    return (tok.build_reference().id_to_token(token_id) or "") if token_id is not None else ""
