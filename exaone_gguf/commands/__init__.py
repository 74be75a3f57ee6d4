"""The commands: one function per `exaone-gguf` command, each taking one typed job (a frozen dataclass parsed and
checked once, by its `parse`, from the command line's values) and a `Ui` (progress, warnings, what to print).

cli.py declares the options and prints; the choices a command makes (which validator, which driver, what a
failed report means, which flags apply) live here, above the packages that do the work.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol

from exaone_gguf.errors import InputError

ByteProgress = tuple[Callable[[Any], None], Callable[[Any, int], None]]  # (on_plan, on_chunk)


class Ui(Protocol):
    """What a command shows while it runs; cli_print.RichUi implements it."""

    console: Any  # a rich Console (the demo's tables)

    def writing(self, label: str) -> AbstractContextManager[ByteProgress]: ...  # a byte-counting bar
    def counting(self, label: str) -> AbstractContextManager[Callable[[int, int], None]]: ...  # done of total
    def uploading(self) -> AbstractContextManager[tuple[Callable, Callable]]: ...  # (on_stage, progress)
    def warning(self, text: str) -> None: ...
    def note(self, text: str) -> None: ...
    def report(self, report: Any) -> None: ...  # a validation report, as it is made
    def shards(self, files: list) -> None: ...  # the files a split output went to
    def show(self, result: Any, as_json: bool = False) -> None: ...  # a command's result


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the user has and how to go on (the CLI prints it after 'interrupted;')."""

    def __init__(self, after: str):
        super().__init__(after)
        self.after = after


def parse_overrides(tensor_type, output_tensor_type, token_embedding_type, pure, leave_output_tensor):
    """llama-quantize's per-tensor controls as one TypeOverrides (None when no flag is given)."""
    from exaone_gguf.quantize.mixtures import TypeOverrides, parse_ggml_type, parse_tensor_types

    ov = TypeOverrides(
        tensor_types=parse_tensor_types(list(tensor_type)),
        output_tensor_type=parse_ggml_type(output_tensor_type, "--output-tensor-type") if output_tensor_type else None,
        token_embedding_type=(
            parse_ggml_type(token_embedding_type, "--token-embedding-type") if token_embedding_type else None
        ),
        pure=pure,
        leave_output_tensor=leave_output_tensor,
    )
    return ov if ov else None


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """--threshold NAME=NUMBER ... -> {NAME: NUMBER}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--threshold {item!r}: write NAME=NUMBER, e.g. max_mean_kld=0.01.")
    return out
