"""Quantization: block formats, kernels (llama.cpp's ggml via ctypes, numpy reference) and the
per-tensor type mixtures of llama.cpp's quantizer."""

from exaone_gguf.quantize.formats import FILE_TYPES, FileType, file_type, row_nbytes
from exaone_gguf.quantize.kernels import quantize
from exaone_gguf.quantize.mixtures import file_type_value, plan_types

__all__ = ["FILE_TYPES", "FileType", "file_type", "row_nbytes", "quantize", "file_type_value", "plan_types"]
