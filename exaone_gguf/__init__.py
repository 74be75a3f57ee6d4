"""exaone-gguf: convert, quantize and validate EXAONE checkpoints as GGUF files."""

__version__ = "0.1.0"

# The family modules register their HF architectures, config reading and tensor tables on import; every
# layer that reads a checkpoint (checkpoint.spec) finds them registered.
import exaone_gguf.families  # noqa: E402,F401
