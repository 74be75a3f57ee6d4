"""A streaming safetensors writer (tensors produced chunk by chunk; shards with an index past a size limit).

Used by make-tiny, which must write multi-GB random checkpoints without holding them in memory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass
class TensorSource:
    name: str
    dtype: str  # safetensors dtype
    shape: tuple[int, ...]
    produce: Callable[[], Iterable[np.ndarray]]  # yields the tensor's bytes as arrays, in order

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _ITEMSIZE[self.dtype]


def _write_one(path: Path, tensors: list[TensorSource]) -> None:
    header, offset = {}, 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            for t in tensors:
                n = 0
                for chunk in t.produce():
                    b = memoryview(np.ascontiguousarray(chunk)).cast("B")
                    f.write(b)
                    n += len(b)
                assert n == t.nbytes, (t.name, n, t.nbytes)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_checkpoint_weights(
    directory: Path, tensors: list[TensorSource], max_shard_bytes: int = 5 << 30
) -> list[Path]:
    """Write model.safetensors, or model-0000i-of-0000n.safetensors + index when over `max_shard_bytes`."""
    shards: list[list[TensorSource]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    if len(shards) == 1:
        path = directory / "model.safetensors"
        _write_one(path, shards[0])
        return [path]
    paths, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        path = directory / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        _write_one(path, shard)
        paths.append(path)
        weight_map.update({t.name: path.name for t in shard})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths
