"""Strict GGUF reading (`reader`) and the `inspect` report built on it."""

from exaone_gguf.gguf_io.reader import GGUFFile, SplitInfo, TensorInfo, read_gguf

__all__ = ["GGUFFile", "SplitInfo", "TensorInfo", "read_gguf"]
