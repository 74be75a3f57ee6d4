"""Read llama.cpp importance-matrix files into per-column weights, as llama-quantize does.

Two formats (common/imatrix-loader.cpp and tools/quantize/quantize.cpp `load_imatrix`):
* GGUF (current llama-imatrix): keys imatrix.datasets / chunk_count / chunk_size and, per tensor,
  F32 tensors `<name>.in_sum2` (sum of squared activations, ne0 * n_expert) and `<name>.counts`
  (one count per expert). Weight = in_sum2 / count, or 1 where the count is 0.
* legacy .dat: int32 n_entries, then per entry int32 name length, name, int32 ncall, int32 nval,
  nval float32 values; optional trailer (chunk count, dataset name). Weight = value / ncall.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.reader import read_gguf
from exaone_gguf.gguf_io.writer import GGUFPlan, write_gguf

_SUMS, _COUNTS = ".in_sum2", ".counts"


def load_imatrix(path: str | Path) -> dict[str, np.ndarray]:
    """{tensor name: float32 weights (ne0 * n_expert values)}; InputError for a bad file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise InputError(f"{path}: cannot read the imatrix file ({e.strerror}).") from e
    data = _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
    for name, w in data.items():
        if not np.all(np.isfinite(w)):
            raise InputError(f"{path}: imatrix entry {name} contains non-finite values; recompute the imatrix.")
    return data


def _load_gguf(path: Path) -> dict[str, np.ndarray]:
    keys = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    with read_gguf(path) as reader:  # the strict reader: a damaged file is one InputError sentence
        if any(k not in reader for k in keys):
            raise InputError(
                f"{path}: imatrix metadata ({', '.join(keys)}) is missing; regenerate it with llama-imatrix."
            )
        for t in reader.tensors:
            for suffix, table in ((_SUMS, sums), (_COUNTS, counts)):
                if t.name.endswith(suffix):
                    if t.tensor_type != GGMLQuantizationType.F32:
                        raise InputError(f"{path}: imatrix tensor {t.name} must be F32.")
                    table[t.name[: -len(suffix)]] = reader.tensor_bytes(t).view("<f4").astype(np.float32)
    if not sums and not counts:
        raise InputError(f"{path}: the imatrix file holds no {_SUMS}/{_COUNTS} tensors.")
    out = {}
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise InputError(f"{path}: imatrix entry {name} lacks its {_SUMS} or {_COUNTS} tensor.")
        s, c = sums[name], counts[name]
        if c.size == 0 or s.size % c.size:
            raise InputError(f"{path}: imatrix entry {name} has {s.size} sums for {c.size} counts.")
        # std::lround, then (float): counts are whole token numbers
        n = np.copysign(np.floor(np.abs(c.astype(np.float64)) + 0.5), c).astype(np.float32)
        per_expert = s.reshape(c.size, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(n[:, None] > 0, per_expert / np.where(n > 0, n, 1)[:, None], np.float32(1))
        out[name] = w.astype(np.float32).reshape(-1)
    return out


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    buf = path.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(buf):
            raise InputError(f"{path}: the imatrix file is truncated or is not an imatrix file.")
        vals = struct.unpack_from(fmt, buf, pos)
        pos += size
        return vals

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise InputError(f"{path}: the imatrix file holds no entries.")
    out = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        if length < 0 or pos + length > len(buf):
            raise InputError(f"{path}: the imatrix file is truncated or is not an imatrix file.")
        name = buf[pos : pos + length].split(b"\0", 1)[0].decode("utf-8", "replace")
        pos += length
        ncall, nval = take("<ii")
        if nval < 1:
            raise InputError(f"{path}: imatrix entry {name} has no values.")
        sums = np.array(take(f"<{nval}f"), dtype=np.float32)
        out[name] = sums / np.float32(ncall) if ncall > 0 else sums
    return out


def weights_for(imatrix: dict[str, np.ndarray] | None, name: str, ne: tuple[int, ...]) -> np.ndarray | None:
    """The weights llama.cpp passes for tensor `name` (ne in GGUF order), or None.

    Like llama_model_quantize: no entry -> None; a size other than ne[0]*ne[2] is an error,
    except for token_embd, whose entry is then ignored.
    """
    if imatrix is None or name not in imatrix:
        return None
    w = imatrix[name]
    expected = ne[0] * (ne[2] if len(ne) > 2 else 1)
    if w.size != expected:
        if name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return None
        raise InputError(
            f"imatrix entry {name} has {w.size} values but the tensor needs {expected}; "
            "use an imatrix computed for this model."
        )
    return w


def write_imatrix(
    path: str | Path,
    stats: dict[str, tuple[np.ndarray, np.ndarray]],
    datasets: list[str],
    chunk_count: int,
    chunk_size: int,
) -> int:
    """Write llama-imatrix's GGUF format (tools/imatrix/imatrix.cpp save_imatrix): general.type "imatrix",
    imatrix.datasets / chunk_count / chunk_size, and per tensor `<name>.in_sum2` F32 [ne0, n_mat] (sums of
    squared activations) and `<name>.counts` F32 [1, n_mat]. `stats`: {name: (sums [n_mat, ne0], counts
    [n_mat])}. Written through gguf_io (a temporary file renamed at the end). Returns the file size."""
    plan = GGUFPlan()
    plan.add_string("general.type", "imatrix")
    plan.add_array("imatrix.datasets", GGUFValueType.STRING, list(datasets))
    plan.add_u32("imatrix.chunk_count", chunk_count)
    plan.add_u32("imatrix.chunk_size", chunk_size)
    for name, (sums, counts) in stats.items():
        sums = np.ascontiguousarray(sums, dtype=np.float32).reshape(len(counts), -1)
        counts = np.asarray(counts, dtype=np.float32).reshape(-1, 1)
        n_mat = len(counts)  # ggml_n_dims: a [ne0, 1] tensor is written as 1-D, as llama-imatrix's files show
        plan.add_tensor(
            f"{name}{_SUMS}",
            (sums.shape[1],) + ((n_mat,) if n_mat > 1 else ()),
            GGMLQuantizationType.F32,
            lambda s=sums: [s],
        )
        plan.add_tensor(
            f"{name}{_COUNTS}", (1,) + ((n_mat,) if n_mat > 1 else ()), GGMLQuantizationType.F32, lambda c=counts: [c]
        )
    return write_gguf(plan, Path(path))
