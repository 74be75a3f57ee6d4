"""The converter's fast paths write the same bytes as the plain ones.

Kept-as-is tensors go as file spans copied by the kernel (copy_file_range, with a pread/pwrite fallback);
BF16 <-> F16 goes through a 65536-entry table. These tests pin both to the plain row conversion.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from exaone_gguf.convert import pipeline
from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.elements import bf16_bits_to_f32 as bf16_to_f32
from exaone_gguf.gguf_io import writer
from exaone_gguf.gguf_io.writer import FileSpan, GGUFPlan, write_gguf
from exaone_gguf.tiny import make_tiny

pytestmark = pytest.mark.slow  # torch / transformers


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("src", "qtype"), [("BF16", T.F16), ("F16", T.BF16)])
def test_table_matches_row_conversion_for_every_pattern(src, qtype):
    bits = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    raw = bits if src == "BF16" else bits.view(np.float16)
    x = bf16_to_f32(raw) if src == "BF16" else raw.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want = pipeline.convert_rows(x, qtype)
    got = pipeline._lookup(pipeline._table16(src, qtype), raw)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    base = make_tiny("exaone4", root / "bf16", layers=1, hidden=64, intermediate=128)
    out = {"BF16": base}
    cfg = json.loads((base / "config.json").read_text())
    for dtype in ("float16", "float32"):
        cfg["torch_dtype"] = dtype
        (root / f"{dtype}.json").write_text(json.dumps(cfg))
        out[dtype] = make_tiny(None, root / dtype, from_config=root / f"{dtype}.json")
    return out


@pytest.mark.parametrize("src", ["BF16", "float16", "float32"])
@pytest.mark.parametrize("outtype", ["bf16", "f16", "f32"])
def test_small_chunks_spans_and_fallback_give_the_same_bytes(checkpoints, tmp_path, monkeypatch, src, outtype):
    ck = checkpoints[src]
    convert(ck, tmp_path / "default.gguf", ConvertOptions(outtype=outtype))
    want = _sha(tmp_path / "default.gguf")

    # many chunks, many spans (not row-aligned to pages), writeback kicked often
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 70_000)
    monkeypatch.setattr(pipeline, "SPAN_BYTES", 4096 + 512)
    monkeypatch.setattr(writer, "WRITEBACK_BYTES", 100_000)
    convert(ck, tmp_path / "small.gguf", ConvertOptions(outtype=outtype))
    assert _sha(tmp_path / "small.gguf") == want

    # a filesystem where the kernel cannot copy between the files: the pread/pwrite fallback
    def cross_device(*_a):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", cross_device, raising=False)
    convert(ck, tmp_path / "fallback.gguf", ConvertOptions(outtype=outtype))
    assert _sha(tmp_path / "fallback.gguf") == want


def _plan_with_span(path: Path, offset: int, nbytes: int) -> GGUFPlan:
    plan = GGUFPlan()
    plan.add_string("general.architecture", "llama")
    plan.add_tensor("t", (nbytes // 4,), T.F32, lambda: [FileSpan(path, offset, nbytes)])
    return plan


def test_span_copies_the_bytes_and_a_short_source_fails(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 16)
    out = tmp_path / "ok.gguf"
    write_gguf(_plan_with_span(src, 100, 1024), out)
    assert out.read_bytes()[-1024:] == src.read_bytes()[100:1124]

    bad = tmp_path / "bad.gguf"
    with pytest.raises(RuntimeError, match="ended before"):
        write_gguf(_plan_with_span(src, 4096 - 512, 1024), bad)  # runs past the end of the source
    assert not bad.exists() and not (tmp_path / "bad.gguf.partial").exists()
