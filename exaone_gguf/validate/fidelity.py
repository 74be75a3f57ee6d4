"""Fidelity in ggml: llama.cpp on the file against llama.cpp on a float conversion of the source, and that
conversion proven against the source's own forward.

    1. our converter writes the source at its own precision (F32, or its 16-bit type: no rounding) to a
       temporary file, deleted after, on errors and Ctrl-C too;
    2. llama.cpp runs it on the evaluation tokens (the `base` logits);
    3. `source: ...` check: the numpy forward of the checkpoint by its own HF tensor names and config keys
       (reference/source.py, which imports nothing of the converter's tables) against `base`. A wrong tensor
       table entry or hparam (gate and up swapped, q permuted twice, a wrong RoPE base) is in the conversion
       and in every file made with it, and lands here far outside the limits;
    4. fidelity (KLD, top-1, perplexity) is llama.cpp on the file against `base`, as llama-perplexity's
       --kl-divergence compares two files: the cost of the file's type, with no numpy forward.

A float file (F32, F16, BF16) needs no conversion: step 3 compares the source's own forward with llama.cpp on
the file itself, at the limits of its type, and that comparison is its fidelity.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.runtime.logits import Runner, trim_heap
from exaone_gguf.runtime.routes import llama_routes
from exaone_gguf.validate.metadata_check import file_type_name
from exaone_gguf.validate.metrics import LogitComparison, StructureLimit, compare_logits, judge_structure
from exaone_gguf.validate.results import CheckResult

# Limits on the source forward (numpy float32, as transformers computes) against llama.cpp on the conversion or
# on a float file, about 3x the worst honest measurement (256 tokens; tiny Llama, exaone4 and K-EXAONE at the
# tests' sizes, the trained SmolLM2-135M as EXAONE 3.x, the EXAONE 4.0 1.2B shape with random weights):
#   F32  only summation order differs: 9.9e-7 max |dlogit| / max |logit|, mean KLD 1.1e-11 (K-EXAONE 5e-11) on the
#        tiny models; the trained SmolLM2-135M (30 layers) 5.35e-6 (its F32 file, our convert), so 2e-5 as the
#        structure check's F32 limit
#   F16  llama.cpp rounds activations to F16 before each product with F16 weights, the float32 forward does
#        not: 1.2e-3 / 2.6e-6 (SmolLM2), 5.5e-4 / 2.4e-6 (tiny Llama), 3.4e-4 / 1.8e-6 (exaone4)
#   BF16 the same at BF16: 1.4e-2 / 1.6e-4 (SmolLM2), 6.9e-3 / 5.2e-4 (1.2B shape), 4.4e-3 / 3.1e-4 (tiny
#        Llama), 2.8e-3 / 1.1e-4 (exaone4), K-EXAONE 6.5e-4 (following llama.cpp's experts)
# Gate and up swapped or q permuted twice measure mean KLD 4.7-4.8 (tests/test_independence.py).
SOURCE_LIMITS = {
    "F32": StructureLimit("F32", 2e-5, 1e-10),
    "F16": StructureLimit("F16", 5e-3, 3e-5),
    "BF16": StructureLimit("BF16", 5e-2, 2e-3),
}


@dataclass
class FloatBase:
    """llama.cpp on our float conversion of the source: its logits [T, V], its type name (F32 / F16 / BF16), a
    MoE's expert choice per layer on it (None when it cannot be read), its architecture and its metadata under
    that prefix (`{arch}.*`: what llama.cpp builds the graph from)."""

    logits: np.ndarray
    type_name: str
    routes: dict | None
    arch: str
    keys: dict[str, Any]


def float_conversion_logits(
    src: Path,
    arch: str | None,
    tokens: list[int],
    threads: int,
    device: str = "cpu",
    moe: bool = False,
    no_mtp: bool = False,
) -> FloatBase:
    """llama.cpp's logits on our converter's float conversion of `src` (written as GGUF architecture `arch`,
    None: the family's own; without MTP blocks with `no_mtp`, as the file is); `moe`: also read its expert
    choice."""
    with tempfile.TemporaryDirectory(prefix="exaone-gguf-float-") as tmp:
        out = Path(tmp) / "source-float.gguf"
        result = convert(src, out, ConvertOptions(outtype="auto", threads=threads, arch=arch, no_mtp=no_mtp))
        with read_gguf(out) as g:
            conv_arch = g.architecture
            keys = {k: v for k, v in g.metadata.items() if k.startswith(f"{conv_arch}.")}
        trim_heap()  # the converter's freed buffers go back before llama.cpp maps the whole float model
        with Runner(out, n_ctx=max(256, len(tokens)), device=device, threads=threads) as runner:
            logits = runner.logits(tokens, copy=False)  # llama-cpp-python's own buffer, kept after close: no copy
            routes = None
            if moe:
                try:
                    routes = llama_routes(runner.llm, tokens)
                except RuntimeError:  # the routing check reports why; the source forward then routes on its own
                    pass
    return FloatBase(logits, file_type_name(result.file_type).upper().removeprefix("MOSTLY_"), routes, conv_arch, keys)


def source_precision(ckpt) -> str | None:
    """F32 / F16 / BF16 when every 2-D tensor of the checkpoint is stored so (None: mixed or other dtypes)."""
    dtypes = {h.dtype for h in ckpt.tensors.values() if len(h.shape) == 2}
    return dtypes.pop() if len(dtypes) == 1 and dtypes <= {"F32", "F16", "BF16"} else None


def check_source(
    ckpt, base: np.ndarray, base_type: str, tokens: list[int], on_file: bool = False, routes: dict | None = None
) -> tuple[CheckResult, LogitComparison]:
    """The source's own numpy forward against llama.cpp's logits `base` on its float conversion, or on the file
    itself (`on_file`: a float file), of type `base_type`; a MoE forward follows llama.cpp's expert choice on
    that run (`routes`)."""
    from exaone_gguf.model.source import forward_source

    name = "source: its own forward vs llama.cpp"
    ref = forward_source(ckpt, tokens, routes=routes)
    c = compare_logits(ref, base, tokens)
    limit = SOURCE_LIMITS[base_type]
    ok, detail = judge_structure(c, limit)
    detail = f"{'the file itself, a ' + base_type + ' file' if on_file else base_type + ' conversion'}: {detail}"
    if not ok:
        detail += (
            "; the file does not compute the source's network (a damaged file, or a wrong tensor table or "
            "hyperparameter in the converter that made it)"
            if on_file
            else "; the converter's tensor table or hyperparameters (or llama.cpp's graph) do not compute the "
            "source's network, so no file made from it can be trusted"
        )
    return CheckResult(name, "pass" if ok else "fail", detail, {"limit": limit.__dict__, **c.to_dict()}), c
