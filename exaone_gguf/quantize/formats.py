"""The ggml tensor types and llama.cpp file types this project writes.

Type ids and block sizes come from gguf-py (`GGMLQuantizationType`, `GGML_QUANT_SIZES`), which
mirror ggml.h; the file-type table mirrors llama.h's `llama_ftype` and
`llama_ftype_get_default_type` in src/llama-quant.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from exaone_gguf.errors import InputError

T = GGMLQuantizationType

# Tensor types this package can produce (through ggml, quantize/kernels.py).
SUPPORTED_TYPES: frozenset[GGMLQuantizationType] = frozenset(
    {
        T.F32,
        T.F16,
        T.BF16,
        T.Q8_0,
        T.Q4_0,
        T.Q4_1,
        T.Q5_0,
        T.Q5_1,
        T.Q2_K,
        T.Q3_K,
        T.Q4_K,
        T.Q5_K,
        T.Q6_K,
        T.IQ4_NL,
        T.IQ4_XS,
    }
)


@dataclass(frozen=True)
class FileType:
    name: str  # CLI spelling, e.g. "q4_k_m"
    ftype: LlamaFileType  # value llama.cpp writes to general.file_type
    default_type: GGMLQuantizationType  # type of an ordinary 2-D weight before the mixture rules


_F = LlamaFileType
FILE_TYPES: dict[str, FileType] = {
    ft.name: ft
    for ft in (
        FileType("f32", _F.ALL_F32, T.F32),
        FileType("f16", _F.MOSTLY_F16, T.F16),
        FileType("bf16", _F.MOSTLY_BF16, T.BF16),
        FileType("q8_0", _F.MOSTLY_Q8_0, T.Q8_0),
        FileType("q4_0", _F.MOSTLY_Q4_0, T.Q4_0),
        FileType("q4_1", _F.MOSTLY_Q4_1, T.Q4_1),
        FileType("q5_0", _F.MOSTLY_Q5_0, T.Q5_0),
        FileType("q5_1", _F.MOSTLY_Q5_1, T.Q5_1),
        FileType("q2_k", _F.MOSTLY_Q2_K, T.Q2_K),
        FileType("q3_k_m", _F.MOSTLY_Q3_K_M, T.Q3_K),
        FileType("q4_k_s", _F.MOSTLY_Q4_K_S, T.Q4_K),
        FileType("q4_k_m", _F.MOSTLY_Q4_K_M, T.Q4_K),
        FileType("q5_k_s", _F.MOSTLY_Q5_K_S, T.Q5_K),
        FileType("q5_k_m", _F.MOSTLY_Q5_K_M, T.Q5_K),
        FileType("q6_k", _F.MOSTLY_Q6_K, T.Q6_K),
        FileType("iq4_xs", _F.MOSTLY_IQ4_XS, T.IQ4_XS),
    )
}


def file_type(name: str) -> FileType:
    """Look up a CLI file-type name (case-insensitive); InputError if unknown."""
    ft = FILE_TYPES.get(name.lower())
    if ft is None:
        raise InputError(f"Unknown quantization type {name!r}; use one of: {', '.join(FILE_TYPES)}.")
    return ft


def block_size(qtype: GGMLQuantizationType) -> int:
    """Values per block (1 for the float types)."""
    return GGML_QUANT_SIZES[GGMLQuantizationType(qtype)][0]


def type_size(qtype: GGMLQuantizationType) -> int:
    """Bytes per block."""
    return GGML_QUANT_SIZES[GGMLQuantizationType(qtype)][1]


def is_quantized(qtype: GGMLQuantizationType) -> bool:
    """True for block types (ggml_is_quantized): everything but the plain float/int types."""
    return GGMLQuantizationType(qtype) not in (T.F32, T.F16, T.BF16, T.F64, T.I8, T.I16, T.I32, T.I64)


def row_nbytes(qtype: GGMLQuantizationType, ncols: int) -> int:
    """Bytes of one row of `ncols` values (ggml_row_size); ValueError if ncols is not whole blocks."""
    blck, size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
    if ncols % blck:
        raise ValueError(f"row of {ncols} values is not a multiple of the {qtype.name} block size {blck}")
    return ncols // blck * size
