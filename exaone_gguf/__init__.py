"""exaone-gguf: convert, quantize and validate EXAONE checkpoints as GGUF files."""

__version__ = "0.1.0"
