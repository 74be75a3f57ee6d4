"""`quantization_config` -> the reader of a quantized checkpoint's layers (AWQ, GPTQ, FP8, compressed-tensors).

Each reader's `wrap(tensors, config_path)` replaces the stored parts of every quantized Linear by one lazy `.weight`
handle that dequantizes exactly; any other method, or a setting a reader does not handle, is refused in one sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exaone_gguf.checkpoint.awq import parse_awq_config
from exaone_gguf.checkpoint.compressed_tensors import parse_ct_config
from exaone_gguf.checkpoint.fp8 import parse_fp8_config
from exaone_gguf.checkpoint.gptq import parse_gptq_config
from exaone_gguf.errors import InputError

PARSERS = {
    "awq": parse_awq_config,
    "gptq": parse_gptq_config,
    "fp8": parse_fp8_config,
    "compressed-tensors": parse_ct_config,
}


def parse_quantization(qc: Any, path: Path | str) -> Any:
    """The reader for config.json's `quantization_config` (wrap(tensors, config_path) -> tensors)."""
    if not isinstance(qc, dict):
        raise InputError(f"{path}: 'quantization_config' must be an object; restore the original config.json.")
    method = str(qc.get("quant_method")).lower()
    if method not in PARSERS:
        raise InputError(
            f"{path}: quantized checkpoints ({qc.get('quant_method') or 'unknown method'}) are not supported; "
            f"{', '.join(PARSERS)} are; convert the unquantized checkpoint."
        )
    return PARSERS[method](qc, path)


def quantization_of(spec) -> Any:
    qc = spec.config.get("quantization_config")
    return None if qc is None else parse_quantization(qc, spec.config_path or "config.json")
