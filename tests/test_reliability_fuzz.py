"""Issue 5, part 2: property-based tests of the safetensors reader (the GGUF reader's are in
test_gguf_reader.py). Whatever the bytes, SafetensorsFile either accepts the file, and then every tensor
it hands out reads back within the file, or raises InputError; never anything else."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exaone_gguf.checkpoint.safetensors import DTYPES, FLOAT_DTYPES, SafetensorsFile
from exaone_gguf.errors import InputError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_file() -> bytes:
    """Three tensors of different dtypes and ranks, metadata, header padded as writers do."""
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [2, 4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [3], "data_offsets": [16, 28]},
        "c": {"dtype": "F16", "shape": [2, 2, 1], "data_offsets": [28, 36]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    data = bytes(range(36))
    return struct.pack("<Q", len(raw)) + raw + data


BASE = _valid_file()


def _read_all(path: Path) -> None:
    """Open the file and touch every tensor; the reader's accepted state must be fully readable."""
    try:
        f = SafetensorsFile(path)
    except InputError:
        return
    size = path.stat().st_size
    for h in f.tensors.values():
        assert h.begin + h.nbytes <= size
        raw = h.raw()
        assert raw.nbytes == h.nbytes
        if h.dtype in FLOAT_DTYPES:
            assert h.to_f32().shape == tuple(h.shape)


def test_valid_base_reads(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(BASE)
    f = SafetensorsFile(p)
    assert sorted(f.tensors) == ["a", "b", "c"]
    np.testing.assert_array_equal(f.tensors["b"].raw().view(np.uint8), np.arange(16, 28, dtype=np.uint8))


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, len(BASE))),
    length=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
@pytest.mark.slow
def test_fuzz_mutated_bytes(tmp_path: Path, edits, cut, length) -> None:
    data = bytearray(BASE)
    for pos, byte in edits:
        data[pos] = byte
    if length is not None:
        data[:8] = struct.pack("<Q", length)
    if cut is not None:
        del data[cut:]
    p = tmp_path / "m.safetensors"
    p.write_bytes(bytes(data))
    _read_all(p)


_dims = st.one_of(
    st.integers(-3, 6), st.integers(2**31, 2**64 + 5), st.booleans(), st.floats(0, 4), st.text(max_size=2)
)
_entry = st.fixed_dictionaries(
    {
        "dtype": st.one_of(st.sampled_from(sorted(DTYPES)), st.text(max_size=5), st.integers(), st.none()),
        "shape": st.one_of(st.lists(_dims, max_size=4), st.integers(), st.none()),
        "data_offsets": st.one_of(
            st.lists(
                st.one_of(st.integers(-2, 80), st.integers(2**62, 2**70), st.floats(0, 8), st.text(max_size=2)),
                max_size=3,
            ),
            st.none(),
        ),
    }
)


@FUZZ
@given(
    entries=st.dictionaries(
        st.text(max_size=6), st.one_of(_entry, st.integers(), st.lists(st.integers(), max_size=2)), max_size=5
    ),
    n_data=st.integers(0, 96),
)
@pytest.mark.slow
def test_fuzz_header_fields(tmp_path: Path, entries, n_data) -> None:
    """Well-formed JSON with hostile field values: types, negative or huge sizes, overlapping spans."""
    raw = json.dumps(entries).encode()
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(n_data))
    _read_all(p)


@pytest.mark.parametrize("dims", [[2**32, 2**32], [2**64, 2**64], [2**63, 2], [0, 2**70]])
def test_sizes_that_wrap_in_64_bits_are_refused(tmp_path: Path, dims) -> None:
    """dtype x shape computed with fixed-width integers wraps to a small (or zero) byte count; the reader
    must see the true size and refuse."""
    n_bytes = (
        (np.prod(np.array(dims, dtype=np.uint64), dtype=np.uint64) * np.uint64(4)).item()
        if all(d < 2**64 for d in dims)
        else 0
    )
    header = json.dumps({"w": {"dtype": "F32", "shape": dims, "data_offsets": [0, n_bytes % 64]}}).encode()
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + bytes(n_bytes % 64))
    if 0 in dims:  # a zero dimension makes a genuinely empty tensor: accepted
        assert SafetensorsFile(p).tensors["w"].nbytes == 0
        return
    with pytest.raises(InputError, match="needs"):
        SafetensorsFile(p)
