"""Importance matrices: our reader + ggml kernels give the bytes llama_model_quantize writes with the same imatrix."""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from test_quant_mixtures import MODELS, read_types_and_bytes, write_model

from exaone_gguf.errors import InputError
from exaone_gguf.quantize import kernels
from exaone_gguf.quantize.imatrix import load_imatrix, weights_for
from exaone_gguf.quantize.mixtures import file_type_value, plan_types

MODEL = MODELS["exaone4-30-tied"]


def _raw_stats(data: dict[str, np.ndarray], seed: int = 1) -> dict[str, tuple[np.ndarray, float]]:
    """Per 2-D tensor: (sum of squared activations per column, token count)."""
    rng = np.random.default_rng(seed)
    stats = {}
    for name, arr in data.items():
        if arr.ndim == 2:
            ncols = arr.shape[1] if name != "token_embd.weight" else 7  # wrong size: llama.cpp ignores it
            stats[name] = ((rng.random(ncols) * 50 + 0.5).astype(np.float32), float(rng.integers(10, 500)))
    return stats


def write_gguf_imatrix(path: Path, stats, with_metadata: bool = True) -> None:
    w = gguf.GGUFWriter(str(path), "imatrix")
    if with_metadata:
        w.add_array("imatrix.datasets", ["test.txt"])
        w.add_uint32("imatrix.chunk_count", 4)
        w.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, count) in stats.items():
        w.add_tensor(f"{name}.in_sum2", sums)
        w.add_tensor(f"{name}.counts", np.array([count], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_legacy_imatrix(path: Path, stats) -> None:
    parts = [struct.pack("<i", len(stats))]
    for name, (sums, count) in stats.items():
        raw = name.encode()
        ncall = 10  # legacy files store mean * ncall
        parts += [
            struct.pack("<i", len(raw)),
            raw,
            struct.pack("<ii", ncall, sums.size),
            (sums / np.float32(count) * np.float32(ncall)).astype("<f4").tobytes(),
        ]
    parts += [struct.pack("<i", 4), struct.pack("<i", 8), b"test.txt"]
    path.write_bytes(b"".join(parts))


def llama_quantize_with_imatrix(src: Path, dst: Path, ftype: str, imatrix: dict[str, np.ndarray]) -> int:
    entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
    keep = []
    for i, (name, w) in enumerate(imatrix.items()):
        arr = np.ascontiguousarray(w, dtype=np.float32)
        keep.append(arr)
        entries[i].name = name.encode()
        entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = arr.size
    entries[len(imatrix)].name = None  # terminator
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type_value(ftype)
    params.nthread = 2
    params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    return llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("imatrix")
    data = write_model(d / "f32.gguf", MODEL)
    return d, data


@pytest.mark.parametrize("fmt", ["gguf", "legacy"])
def test_formats_load_to_the_same_weights(source, fmt):
    d, data = source
    stats = _raw_stats(data)
    path = d / f"imatrix.{fmt}"
    (write_gguf_imatrix if fmt == "gguf" else write_legacy_imatrix)(path, stats)
    loaded = load_imatrix(path)
    assert set(loaded) == set(stats)
    for name, (sums, count) in stats.items():
        np.testing.assert_allclose(loaded[name], sums / np.float32(count), rtol=1e-6)


@pytest.mark.parametrize("ftype", ["q4_k_m", "iq4_xs", "q4_0", "q6_k", "q3_k_m"])
def test_imatrix_bytes_match_llama_quantize(source, ftype, tmp_path):
    d, data = source
    path = d / "imatrix.gguf"
    write_gguf_imatrix(path, _raw_stats(data))
    imatrix = load_imatrix(path)
    out = tmp_path / "out.gguf"
    assert llama_quantize_with_imatrix(d / "f32.gguf", out, ftype, imatrix) == 0
    types, raw, _ = read_types_and_bytes(out)
    specs = [(n, tuple(reversed(a.shape))) for n, a in data.items()]
    plan = plan_types(specs, ftype, MODEL.arch, MODEL.n_layers, n_gqa=MODEL.n_head // MODEL.n_head_kv, has_imatrix=True)
    assert plan == types
    for name, arr in data.items():
        if arr.ndim == 1:
            continue
        w = weights_for(imatrix, name, tuple(reversed(arr.shape)))
        assert (w is None) == (name == "token_embd.weight")
        assert kernels.quantize(arr, plan[name], imatrix=w).tobytes() == raw[name], name
    # and the imatrix mattered: without it the attn_q bytes are different
    q = "blk.0.attn_q.weight"
    assert kernels.quantize(data[q], plan[q]).tobytes() != raw[q]


def test_has_imatrix_changes_the_plan(source):
    _, data = source
    specs = [(n, tuple(reversed(a.shape))) for n, a in data.items()]
    plain = plan_types(specs, "q4_0", "exaone4", 30, n_gqa=4)
    weighted = plan_types(specs, "q4_0", "exaone4", 30, n_gqa=4, has_imatrix=True)
    assert plain["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q4_0
    assert weighted["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q4_1


def test_bad_imatrix_files_are_rejected(source, tmp_path):
    _, data = source
    stats = _raw_stats(data)
    no_meta = tmp_path / "nometa.gguf"
    write_gguf_imatrix(no_meta, stats, with_metadata=False)
    with pytest.raises(InputError, match="metadata"):
        load_imatrix(no_meta)
    cut = tmp_path / "cut.gguf"  # a GGUF imatrix cut inside its tensor data: gguf_io's strict reader refuses it
    write_gguf_imatrix(cut, stats)
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"cut\.gguf: .*re-download or re-convert the file"):
        load_imatrix(cut)
    truncated = tmp_path / "trunc.dat"
    write_legacy_imatrix(truncated, stats)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(InputError, match="truncated"):
        load_imatrix(truncated)
    nan = tmp_path / "nan.gguf"
    write_gguf_imatrix(nan, {"blk.0.attn_q.weight": (np.full(256, np.nan, np.float32), 3.0)})
    with pytest.raises(InputError, match="non-finite"):
        load_imatrix(nan)
    with pytest.raises(InputError, match="cannot read"):
        load_imatrix(tmp_path / "missing.dat")
    with pytest.raises(InputError, match="needs 256"):
        weights_for({"blk.0.attn_q.weight": np.ones(7, np.float32)}, "blk.0.attn_q.weight", (256, 8))
