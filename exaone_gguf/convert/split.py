"""Split a GGUF plan into shards the way llama.cpp's gguf-split does.

Semantics (vendor/llama.cpp/tools/gguf-split/gguf-split.cpp and src/llama.cpp, llama-cpp-python 0.3.36):
- shard files are `PREFIX-00001-of-0000N.gguf` (`llama_split_path`: "%s-%05d-of-%05d.gguf", 1-based);
- shard 1 carries every metadata key of the unsplit file, then `split.no` (u16), `split.count` (u16) and
  `split.tensors.count` (i32); the other shards carry only those three keys and their tensors;
- tensors keep their order; a new shard starts when the padded tensor bytes of the current shard plus the
  next tensor would exceed the size limit (metadata is not counted), or every N tensors;
- sizes are decimal: 5G = 5 * 1000**3 bytes, 500M = 500 * 1000**2 (gguf-split accepts only M and G; K and a
  plain byte count are accepted here too, as convert_hf_to_gguf.py does).
llama.cpp loads a split model from its first shard and finds the others by name.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gguf import GGUFValueType

from exaone_gguf.convert.writer import ALIGNMENT, GGUFPlan
from exaone_gguf.errors import InputError

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
