"""Run a GGUF in llama-cpp-python: full per-position logits, tokenization, chat completion.

Row i of the logits predicts token i+1 (llama-cpp-python fills `scores` for every position only with
`logits_all=True`). The KV cache is kept in F32 so that the comparison measures the file, not llama.cpp's
default F16 cache rounding.

The tokens are decoded LOGITS_BATCH at a time (the KV cache carries the positions before): llama.cpp's output
buffer and its compute buffer then hold 64 rows of logits, not all of them. At the 1.2B shape (a 102400-token
vocabulary) that is ~200 MB less while the model is mapped, the margin that keeps validate under 3 GB beside a
2.5 GB BF16 file.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from exaone_gguf.cores import resolve_threads
from exaone_gguf.errors import InputError

GGML_TYPE_F32 = 0
LOGITS_BATCH = 64
CUDA_HINT = (
    'reinstall it with CUDA: CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
)


def trim_heap() -> None:
    """glibc keeps freed medium-sized blocks in the process heap; malloc_trim hands them back (no-op elsewhere).
    Called before llama.cpp maps a model, so that what was freed before does not count beside it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def check_device(device: str) -> int:
    """n_gpu_layers for `device`; refuses cuda when this llama-cpp-python build cannot offload."""
    if device == "cpu":
        return 0
    if device != "cuda":
        raise InputError(f"--device {device!r}: choose cpu or cuda.")
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        raise InputError(f"--device cuda: the installed llama-cpp-python has no GPU support; {CUDA_HINT}.")
    return -1


class Runner:
    """One loaded model (vocab-only when `vocab_only`)."""

    def __init__(
        self, gguf: Path, n_ctx: int = 512, device: str = "cpu", vocab_only: bool = False, threads: int | None = None
    ) -> None:
        from llama_cpp import Llama

        self.path = Path(gguf)
        n_gpu_layers = check_device(device)
        try:
            self.llm = Llama(
                str(self.path),
                n_ctx=n_ctx,
                n_batch=min(n_ctx, LOGITS_BATCH),
                n_ubatch=min(n_ctx, LOGITS_BATCH),
                logits_all=not vocab_only,
                vocab_only=vocab_only,
                n_gpu_layers=n_gpu_layers,
                type_k=GGML_TYPE_F32,
                type_v=GGML_TYPE_F32,
                n_threads=resolve_threads(threads),
                seed=0,
                verbose=False,
            )
        except ValueError as e:  # llama-cpp-python raises ValueError("Failed to load model from file: ...")
            raise InputError(
                f"{self.path}: llama.cpp could not load it ({e}); the file is broken or unsupported."
            ) from None

    def logits(self, tokens: list[int], copy: bool = True) -> np.ndarray:
        """float32 [len(tokens), vocab]. copy=False: a view of llama-cpp-python's own buffer, which the next eval
        overwrites (for a last call before close: it saves a [T, vocab] copy while the model is loaded)."""
        self.llm.reset()
        self.llm.eval(tokens)
        scores = self.llm.scores[: len(tokens)]
        return np.array(scores, dtype=np.float32) if copy else scores

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
