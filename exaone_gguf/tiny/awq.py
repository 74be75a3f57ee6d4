"""make-tiny AWQ families: the float tiny model, quantized with AutoAWQ's formula and packed by our own
packer (checkpoint/awq.py, the documented GEMM layout) into `qweight` / `qzeros` / `scales`.

The codes come from the float weights deterministically, so a test can rebuild them and check that the
converter's dequantization gives back exactly `(q - z) * s`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exaone_gguf.checkpoint.awq import pack_int4, parse_awq_config, quantize_awq
from exaone_gguf.checkpoint.st_writer import TensorSource

# As in LG's EXAONE-3.5-*-AWQ configs (the 3.0 file has modules_to_not_convert null; lm_head is never quantized).
AWQ_QUANTIZATION_CONFIG: dict[str, Any] = {
    "backend": "autoawq",
    "bits": 4,
    "do_fuse": False,
    "exllama_config": None,
    "fuse_max_seq_len": None,
    "group_size": 128,
    "modules_to_fuse": None,
    "modules_to_not_convert": ["lm_head"],
    "quant_method": "awq",
    "version": "gemm",
    "zero_point": True,
}


def awq_config(base: dict[str, Any], name: str) -> dict[str, Any]:
    """An AWQ checkpoint's shape of config (EXAONE-3.0-7.8B-Instruct-AWQ's): the float config, fp16, plus
    quantization_config; `name` is the make-tiny family name."""
    cfg = dict(base)
    cfg["_name_or_path"] = f"exaone-gguf/tiny-{name}"
    cfg["torch_dtype"] = "float16"
    cfg["quantization_config"] = dict(AWQ_QUANTIZATION_CONFIG)
    return cfg


def is_awq_linear(name: str, shape: tuple[int, ...]) -> bool:
    """The Linear layers AutoAWQ quantizes: the 2-D weights inside the decoder blocks."""
    return len(shape) == 2 and name.endswith(".weight") and (".layers." in name or ".h." in name)


def _materialize(src: TensorSource) -> np.ndarray:
    parts = [np.asarray(p) for p in src.produce()]
    x = np.concatenate([p.reshape(-1) for p in parts])
    if src.dtype == "BF16":
        x = (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32).reshape(src.shape)


def awq_sources(cfg: dict[str, Any], sources: list[TensorSource]) -> list[TensorSource]:
    """Replace each quantizable `P.weight` by `P.qweight` / `P.qzeros` / `P.scales` (config without AWQ: as is)."""
    qc = cfg.get("quantization_config")
    if qc is None:
        return sources
    awq = parse_awq_config(qc, "<make-tiny>")
    out = []
    for src in sources:
        prefix = src.name[: -len(".weight")]
        if not is_awq_linear(src.name, src.shape) or awq.keeps_float(prefix):
            out.append(src)
            continue

        # Computed when the writer asks, one layer at a time (the float weights are regenerated from the seed).
        def layer(src=src):
            codes, zeros, scales = quantize_awq(_materialize(src), awq.group_size)
            return pack_int4(codes.T), pack_int4(zeros.T), np.ascontiguousarray(scales.T)

        n, k = src.shape
        g = awq.group_size
        out += [
            TensorSource(prefix + ".qweight", "I32", (k, n // 8), lambda f=layer: [f()[0]]),
            TensorSource(prefix + ".qzeros", "I32", (k // g, n // 8), lambda f=layer: [f()[1]]),
            TensorSource(prefix + ".scales", "F16", (k // g, n), lambda f=layer: [f()[2]]),
        ]
    return out
