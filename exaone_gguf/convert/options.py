"""The options of a convert run, listed once: what convert.driver, the plans (pipeline, multiwrite) and
publish read, and the commands layer fills from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.split import parse_split_size
from exaone_gguf.gguf_io.writer import PlannedTensor
from exaone_gguf.quantize.mixtures import TypeOverrides, file_type_value
from exaone_gguf.quantize.target import Target, split_outtype


@dataclass
class ConvertOptions:
    """Everything a convert run takes besides its source and output (the CLI's `convert` flags)."""

    outtype: str | list[str] = "auto"  # one type, or several ("bf16,q8_0" or a list) for a release
    threads: int = 1
    imatrix: Path | str | None = None
    arch: str | None = None  # another GGUF architecture, e.g. EXAONE 3.x as "llama"
    overrides: TypeOverrides | None = None  # llama-quantize's per-tensor controls (--tensor-type, --pure, ...)
    target: Target | None = None  # --target-bpw / --target-size (quantize.target)
    split_max_size: str | int | None = None
    split_max_tensors: int | None = None
    allow_nonfinite: bool = False
    no_mtp: bool = False  # leave the MTP blocks out (llama.cpp loads them and never runs them)
    force: bool = False
    validate: bool = False  # validate each output against the source (publish.run / publish.publish)
    device: str = "cpu"  # where validation runs
    quantized_by: str | None = None  # a release's model card credits them (publish)
    progress: Callable[[PlannedTensor, int], None] | None = None  # (tensor, bytes just written)
    on_plan: Callable[[Any], None] | None = None  # once, before writing: an object whose data_bytes is the total
    on_validated: Callable[[Any], None] | None = None  # each validation report
    on_warning: Callable[[str], None] | None = None  # a sentence about the source (default: warnings.warn)

    def outtypes(self) -> list[str]:
        """'bf16,q8_0, Q4_K_M' (or a list) -> ['bf16', 'q8_0', 'q4_k_m']; unknown or repeated names are refused."""
        text = self.outtype if isinstance(self.outtype, str) else ",".join(self.outtype)
        return parse_outtypes(text)

    @property
    def split(self) -> bool:
        return self.split_max_size is not None or self.split_max_tensors is not None

    def split_limits(self) -> tuple[int | None, int | None]:
        """(bytes, tensors) per shard, at most one of them given."""
        return parse_split_limits(self.split_max_size, self.split_max_tensors)

    def inputs(self, src: Path) -> list[Path]:
        """The files and folders no output may overwrite or lie in."""
        return [Path(src)] + ([Path(self.imatrix)] if self.imatrix else [])


def parse_split_limits(size: str | int | None, tensors: int | None) -> tuple[int | None, int | None]:
    """--split-max-size / --split-max-tensors -> (bytes, tensors) per shard, at most one of them given."""
    if size is not None and tensors is not None:
        raise InputError("--split-max-size and --split-max-tensors: give one of them, not both.")
    if tensors is not None and tensors < 1:
        raise InputError(f"--split-max-tensors {tensors}: give a positive number of tensors per shard.")
    return (parse_split_size(size) if isinstance(size, str) else size), tensors


def parse_outtypes(text: str) -> list[str]:
    """'bf16,q8_0, Q4_K_M' -> ['bf16', 'q8_0', 'q4_k_m']; unknown or repeated names are refused."""
    types = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if not types:
        raise InputError("--outtype: give at least one type, e.g. bf16,q8_0,q4_k_m.")
    for t in types:
        name, _ = split_outtype(t)  # q4_k_m@4.6: a --target-bpw variant (bad numbers raise InputError)
        if name != "auto":
            file_type_value(name)  # raises InputError for an unknown name
    dup = sorted({t for t in types if types.count(t) > 1})
    if dup:
        raise InputError(f"--outtype: {dup[0]} is listed twice; give each type once.")
    return types
