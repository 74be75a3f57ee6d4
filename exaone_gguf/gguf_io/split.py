"""Split GGUF models (gguf-split / `--split-max-size` output): open shard 1, find and check the rest.

As llama.cpp's loader: the model is opened by its first shard (`split.no` 0); the other shards are found
by name (`PREFIX-0000k-of-0000N.gguf`), each must carry its own `split.no`, no tensor may appear twice,
and the total must equal `split.tensors.count`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.reader import GGUFFile, TensorInfo, read_gguf


def shard_paths(first: Path, count: int) -> list[Path]:
    """All shard paths of the model whose first shard is `first` (named like llama_split_path)."""
    from exaone_gguf.convert.split import parse_shard_name, shard_path

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
                    raise InputError(f"{s.path}: tensor {t.name!r} also appears in an earlier shard; re-split the model.")
                self.tensors.append(t)
                self._by_name[t.name] = t
                self._owner[t.name] = s

    @property
    def shard_files(self) -> list[Path]:
        return [s.path for s in self.shards]

    def tensor_bytes(self, name_or_info: str | TensorInfo) -> np.ndarray:
        info = self.tensor(name_or_info if isinstance(name_or_info, str) else name_or_info.name)
        return self._owner[info.name].tensor_bytes(info)

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
                raise InputError(f"{p}: shard {no + 1} of {split.count} of {path} is missing; put every shard beside the first.")
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
