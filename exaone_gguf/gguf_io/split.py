"""Split GGUF models: the shards of a new model, planned as llama.cpp's gguf-split does, and the shards of an
existing model, opened and checked as llama.cpp's loader does.

Writing (vendor/llama.cpp/tools/gguf-split/gguf-split.cpp and src/llama.cpp, llama-cpp-python 0.3.36):
- shard files are `PREFIX-00001-of-0000N.gguf` (`llama_split_path`: "%s-%05d-of-%05d.gguf", 1-based);
- shard 1 carries every metadata key of the unsplit file, then `split.no` (u16), `split.count` (u16) and
  `split.tensors.count` (i32); the other shards carry only those three keys and their tensors;
- tensors keep their order; a new shard starts when the padded tensor bytes of the current shard plus the
  next tensor would exceed the size limit (metadata is not counted), or every N tensors;
- sizes are decimal: 5G = 5 * 1000**3 bytes, 500M = 500 * 1000**2 (gguf-split accepts only M and G; K and a
  plain byte count are accepted here too, as convert_hf_to_gguf.py does).

Reading: the model is opened by its first shard (`split.no` 0); the other shards are found by name
(`PREFIX-0000k-of-0000N.gguf`), each must carry its own `split.no`, no tensor may appear twice, and the
total must equal `split.tensors.count`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
from gguf import GGUFValueType

from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.reader import GGUFFile, TensorInfo, read_gguf
from exaone_gguf.gguf_io.writer import ALIGNMENT, GGUFPlan, Output

SPLIT_NO = "split.no"
SPLIT_COUNT = "split.count"
SPLIT_TENSORS_COUNT = "split.tensors.count"
MAX_SHARDS = 99999  # five digits in the file name

_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3}


def parse_split_size(text: str) -> int:
    """'5G' -> 5_000_000_000 bytes (decimal units, as gguf-split); '300M', '64K' and '12345' work too."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", str(text), re.I)
    if not m or int(m.group(1)) <= 0:
        raise InputError(f"--split-max-size {text!r}: give a positive size such as 5G, 500M or a byte count.")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def shard_path(prefix: Path | str, no: int, count: int) -> Path:
    """The path of 0-based shard `no` of `count` (llama_split_path)."""
    return Path(f"{prefix}-{no + 1:05d}-of-{count:05d}.gguf")


def parse_shard_name(path: Path | str) -> tuple[Path, int, int] | None:
    """(prefix, 0-based shard number, shard count) when `path` is named like a shard, else None."""
    m = _SHARD_RE.match(str(path))
    if not m:
        return None
    return Path(m.group("prefix")), int(m.group("no")) - 1, int(m.group("count"))


def _pad(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def shard_groups(nbytes: list[int], max_bytes: int | None = None, max_tensors: int | None = None) -> list[list[int]]:
    """Tensor indices per shard: gguf-split's rule on the padded tensor sizes `nbytes`."""
    if max_bytes is None and max_tensors is None:
        return [list(range(len(nbytes)))]
    if max_tensors is not None and max_tensors < 1:
        raise InputError(f"--split-max-tensors {max_tensors}: give a positive number of tensors per shard.")
    groups: list[list[int]] = [[]]
    size = 0
    for i, n in enumerate(nbytes):
        n = _pad(n)
        if max_bytes is not None:
            new_shard = size + n > max_bytes and bool(groups[-1])  # an oversized tensor gets a shard of its own
        else:
            new_shard = i > 0 and i % max_tensors == 0  # type: ignore[operator]
        if new_shard:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    if len(groups) > MAX_SHARDS:
        raise InputError(f"splitting gives {len(groups)} shards, more than {MAX_SHARDS}; raise --split-max-size.")
    return groups


def split_plan(plan: GGUFPlan, max_bytes: int | None = None, max_tensors: int | None = None) -> list[GGUFPlan]:
    """The shard plans of `plan` (one plan, unchanged, when everything fits in one shard, as gguf-py's writer
    does). Tensors are copied, so each shard computes its own offsets; their producers are shared."""
    groups = shard_groups([t.nbytes for t in plan.tensors], max_bytes, max_tensors)
    if len(groups) == 1:
        return [plan]
    shards = []
    for no, idx in enumerate(groups):
        shard = GGUFPlan()
        if no == 0:
            shard.kv = {k: v for k, v in plan.kv.items() if not k.startswith("split.")}
        shard.add(SPLIT_NO, GGUFValueType.UINT16, no)
        shard.add(SPLIT_COUNT, GGUFValueType.UINT16, len(groups))
        shard.add(SPLIT_TENSORS_COUNT, GGUFValueType.INT32, len(plan.tensors))
        shard.tensors = [dataclasses.replace(plan.tensors[i], offset=0) for i in idx]
        shards.append(shard)
    return shards


def output_paths(out: Path, n_shards: int) -> list[Path]:
    """`X.gguf` -> [X.gguf] for one shard, else [X-00001-of-0000N.gguf, ...]."""
    out = Path(out)
    if n_shards == 1:
        return [out]
    prefix = out.with_suffix("") if out.suffix == ".gguf" else out
    return [shard_path(prefix, i, n_shards) for i in range(n_shards)]


def split_output(plan: GGUFPlan, out: Path, max_bytes: int | None = None, max_tensors: int | None = None) -> Output:
    """`plan` split by gguf-split's rule, its files named after `out` (X.gguf or X-0000k-of-0000N.gguf)."""
    shards = split_plan(plan, max_bytes, max_tensors)
    return Output(shards, output_paths(out, len(shards)))


def shard_paths(first: Path, count: int) -> list[Path]:
    """All shard paths of the model whose first shard is `first` (named like llama_split_path)."""
    parsed = parse_shard_name(first)
    if parsed is None or parsed[1] != 0 or parsed[2] != count:
        raise InputError(
            f"{first}: is shard 1 of {count} but is not named PREFIX-00001-of-{count:05d}.gguf, so its other "
            f"shards cannot be found; rename it as llama.cpp expects."
        )
    return [shard_path(parsed[0], i, count) for i in range(count)]


class SplitGGUF(GGUFFile):
    """A split model seen as one file: metadata of shard 1, the tensors of every shard in order.

    `tensor_bytes` reads from the shard that holds the tensor; `TensorInfo.offset` is within that shard.
    """

    def __init__(self, shards: list[GGUFFile]) -> None:  # noqa: D107 - GGUFFile.__init__ parses one file
        first = shards[0]
        self.path = first.path
        self.shards = shards
        self.version = first.version
        self.metadata = first.metadata
        self.types = first.types
        self.alignment = first.alignment
        self.data_offset = first.data_offset
        self.file_size = sum(s.file_size for s in shards)
        self._mm = None
        self._buf = None
        self.tensors = []
        self._by_name: dict[str, TensorInfo] = {}
        self._owner: dict[str, GGUFFile] = {}
        for s in shards:
            for t in s.tensors:
                if t.name in self._by_name:
                    raise InputError(
                        f"{s.path}: tensor {t.name!r} also appears in an earlier shard; re-split the model."
                    )
                self.tensors.append(t)
                self._by_name[t.name] = t
                self._owner[t.name] = s

    @property
    def shard_files(self) -> list[Path]:
        return [s.path for s in self.shards]

    def tensor_bytes(self, name_or_info: str | TensorInfo) -> np.ndarray:
        info = self.tensor(name_or_info if isinstance(name_or_info, str) else name_or_info.name)
        return self._owner[info.name].tensor_bytes(info)

    def release(self, name_or_info: str | TensorInfo, start: int = 0, stop: int | None = None) -> None:
        info = self.tensor(name_or_info if isinstance(name_or_info, str) else name_or_info.name)
        self._owner[info.name].release(info, start, stop)

    def close(self) -> None:
        for s in self.shards:
            s.close()

    def __repr__(self) -> str:
        return f"SplitGGUF({str(self.path)!r}, {len(self.shards)} shards, {len(self.tensors)} tensors)"


def open_model(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse a GGUF model strictly. For the first shard of a split model, every shard is opened and checked
    and one merged view is returned; an unsplit file (or a later shard on its own) is returned as it is."""
    first = read_gguf(path)
    split = first.split
    if split is None or split.count == 1 or split.no != 0:
        return first
    shards = [first]
    try:
        for no, p in enumerate(shard_paths(Path(path), split.count)[1:], start=1):
            if not p.exists():
                raise InputError(
                    f"{p}: shard {no + 1} of {split.count} of {path} is missing; put every shard beside the first."
                )
            s = read_gguf(p)
            shards.append(s)
            if s.split is None or s.split.no != no or s.split.count != split.count:
                raise InputError(
                    f"{p}: its split.no/split.count keys say {s.split}, expected shard {no} of {split.count}; "
                    f"the shards do not belong together."
                )
        merged = SplitGGUF(shards)
        if split.tensors_count is not None and split.tensors_count != len(merged.tensors):
            raise InputError(
                f"{path}: split.tensors.count is {split.tensors_count} but the {split.count} shards hold "
                f"{len(merged.tensors)} tensors; a shard is wrong or missing."
            )
        return merged
    except BaseException:
        for s in shards:
            s.close()
        raise
