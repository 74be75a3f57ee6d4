"""The tensor check's fast paths (issue 14 item 6): large block-quantized tensors re-quantized on a sample of their
rows, float tensors compared as raw bytes, the file's mapped pages released behind the reads.

One Llama-shaped model wide enough (hidden 1536) that attn_q (its rows permuted for llama.cpp's RoPE),
attn_output and the FFN tensors take the sampled path, while attn_k/attn_v stay below SAMPLE_MIN_VALUES and
are checked exhaustively. Every damage the exhaustive check exists for must fail the sampled check the same way,
and a row that differs grossly outside the sample must not be called identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf_edit import rewrite
from typer.testing import CliRunner

from exaone_gguf.checkpoint import load_checkpoint
from exaone_gguf.cli import app
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.quantize.kernels import quantize
from exaone_gguf.validate.tensor_check import (
    SAMPLE_BLOCK_ROWS,
    SAMPLE_EVERY,
    SAMPLE_MIN_VALUES,
    _nan_free,
    check_tensors,
)

UNSAMPLED_ROW = SAMPLE_BLOCK_ROWS + 5  # in row block 1: blocks 0, SAMPLE_EVERY, 2 * SAMPLE_EVERY ... are sampled


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """wide(outtype) -> (checkpoint dir, GGUF path): a 2-layer Llama at hidden 1536, each file built once."""
    from exaone_gguf.convert.driver import ConvertOptions, convert
    from exaone_gguf.tiny import make_tiny

    root = tmp_path_factory.mktemp("sample")
    ckpt = make_tiny("llama", root / "llama-1536", layers=2, hidden=1536, intermediate=1536, seed=3)
    files: dict[str, Path] = {}

    def get(outtype: str) -> tuple[Path, Path]:
        if outtype not in files:
            files[outtype] = convert(ckpt, root / f"wide-{outtype}.gguf", ConvertOptions(outtype=outtype)).output
        return ckpt, files[outtype]

    return get


def tensors_check(gguf: Path, ckpt: Path, full: bool = False):
    with read_gguf(gguf) as f:
        return check_tensors(f, load_checkpoint(ckpt), full=full)


def verdicts(result) -> dict[str, dict]:
    return {v["name"]: v for v in result.data["tensors"]}


def edit_rows(f, name: str, rows: list[int], change):
    """Raw-bytes edit of tensor `name`: the listed rows dequantized, changed, quantized again to the tensor's type."""
    info = f.tensor(name)
    qtype = GGMLQuantizationType(info.tensor_type)
    deq = f.rows_f32(info)
    new = deq.copy()
    new[rows] = change(new[rows])
    fresh = quantize(new[rows], qtype).reshape(len(rows), -1)

    def edit(raw: np.ndarray) -> np.ndarray:
        out = raw.copy().reshape(deq.shape[0], -1)
        out[rows] = fresh
        return out.reshape(-1)

    return edit


@pytest.mark.parametrize("outtype", ["q2_k", "q4_k_m"])
def test_honest_file_is_identical_on_the_sample_and_in_full(outtype, wide):
    ckpt, gguf = wide(outtype)
    sampled, full = tensors_check(gguf, ckpt), tensors_check(gguf, ckpt, full=True)
    print(sampled.detail)
    assert sampled.status == "pass" and full.status == "pass", (sampled.detail, full.detail)
    vs = verdicts(sampled)
    large = {n for n, v in vs.items() if v.get("sampled_rows")}
    # the permuted attn_q, attn_output and the three FFN tensors of both layers; attn_k/v are below the size
    assert {
        f"blk.{i}.{t}.weight" for i in (0, 1) for t in ("attn_q", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    } <= large
    assert not {n for n in large if "attn_k" in n or "attn_v" in n}
    assert all(v["identical"] for v in vs.values())
    for n in large:  # the unsampled rows' error is the sample's own (both are fresh quantizations)
        v = vs[n]
        assert v["rel_error"] == pytest.approx(v["fresh_error"], rel=0.05), v
        assert 0 < v["sampled_rows"] < 0.25 * 1536
    assert f"{len(large)} large ones on a sample of 1 row block in {SAMPLE_EVERY}" in sampled.detail
    assert all(v["identical"] and "sampled_rows" not in v for v in verdicts(full).values())


@pytest.mark.parametrize("damage", ["swap", "scale_permuted_q", "scale_ffn"])
def test_whole_tensor_damage_fails_the_sampled_check_as_the_full_one(damage, wide, tmp_path):
    ckpt, gguf = wide("q2_k")
    if damage == "swap":
        bad = rewrite(gguf, tmp_path / "bad.gguf", swap=("blk.1.ffn_gate.weight", "blk.1.ffn_up.weight"))
        names = ["blk.1.ffn_gate.weight", "blk.1.ffn_up.weight"]
    else:
        name = "blk.0.attn_q.weight" if damage == "scale_permuted_q" else "blk.1.ffn_down.weight"
        with read_gguf(gguf) as f:
            n_rows = f.tensor(name).shape[1]
            edit = edit_rows(f, name, list(range(n_rows)), lambda r: r * np.float32(1.02))
        bad = rewrite(gguf, tmp_path / "bad.gguf", tensors={name: edit})
        names = [name]
    with read_gguf(bad) as f:
        assert f.tensor(names[0]).n_elements >= SAMPLE_MIN_VALUES  # the sampled path is the one under test
    sampled, full = tensors_check(bad, ckpt), tensors_check(bad, ckpt, full=True)
    print(sampled.detail)
    assert sampled.status == "fail" and all(n in sampled.detail for n in names)
    assert [v["name"] for v in sampled.data["tensors"] if not v["ok"]] == names
    # the sample fell back to the exhaustive verdict: the same figures and problem for each damaged tensor
    assert [verdicts(sampled)[n] for n in names] == [verdicts(full)[n] for n in names]


def test_a_grossly_damaged_unsampled_row_is_not_called_identical(wide, tmp_path):
    """One zeroed row outside the sample hides inside Q2_K's whole-tensor band; the per-row comparison against
    the source sees it, so the tensor is not reported identical (the exhaustive check then names it within band)."""
    ckpt, gguf = wide("q2_k")
    name = "blk.0.ffn_down.weight"
    with read_gguf(gguf) as f:
        edit = edit_rows(f, name, [UNSAMPLED_ROW], lambda r: r * 0)
    bad = rewrite(gguf, tmp_path / "zero-row.gguf", tensors={name: edit})
    v = verdicts(tensors_check(bad, ckpt))[name]
    print(v)
    assert not v["identical"] and "sampled_rows" not in v
    assert v == verdicts(tensors_check(bad, ckpt, full=True))[name]


def test_full_tensors_catches_what_a_sample_can_miss(wide, tmp_path):
    """The sample's stated limit: one unsampled row scaled by 1.02 stays within rounding size, so the sampled check
    calls the tensor identical on its sample; --full-tensors re-quantizes that row and sees different bytes."""
    ckpt, gguf = wide("q4_k_m")
    name = "blk.1.ffn_up.weight"
    with read_gguf(gguf) as f:
        edit = edit_rows(f, name, [UNSAMPLED_ROW], lambda r: r * np.float32(1.02))
    bad = rewrite(gguf, tmp_path / "row-scaled.gguf", tensors={name: edit})
    sampled = verdicts(tensors_check(bad, ckpt))[name]
    full = verdicts(tensors_check(bad, ckpt, full=True))[name]
    print(sampled, full)
    assert sampled["identical"] and sampled["sampled_rows"] > 0
    assert not full["identical"]


def test_cli_full_tensors_flag(wide, tmp_path):
    ckpt, gguf = wide("q4_k_m")
    sampled_counts = {}
    for flag in ([], ["--full-tensors"]):
        out = tmp_path / f"report{len(flag)}.json"
        res = CliRunner().invoke(
            app, ["validate", str(gguf), "--reference", str(ckpt), "--max-tokens", "32", "--json", str(out), *flag]
        )
        assert res.exit_code == 0, res.output
        t = next(c for c in json.loads(out.read_text())["checks"] if c["name"] == "tensors: match source")
        sampled_counts[bool(flag)] = sum(1 for v in t["data"]["tensors"] if v.get("sampled_rows"))
    assert sampled_counts[False] >= 8 and sampled_counts[True] == 0


def test_float_tensors_in_the_sources_dtype_compare_as_raw_bytes_and_a_changed_value_fails(wide, tmp_path):
    """The tiny Llama is float16: its F16 file's tensors are the source's bytes (the raw-byte path)."""
    ckpt, gguf = wide("f16")
    honest = tensors_check(gguf, ckpt)
    assert honest.status == "pass" and all(v["identical"] for v in honest.data["tensors"]), honest.detail
    name = "blk.1.ffn_up.weight"

    def double_one(raw: np.ndarray) -> np.ndarray:
        bits = raw.copy().view("<u2")
        bits[12345] += 0x400  # exponent + 1: that one weight doubled
        return bits.view(np.uint8)

    bad = rewrite(gguf, tmp_path / "f16-bad.gguf", tensors={name: double_one})
    r = tensors_check(bad, ckpt)
    print(r.detail)
    assert r.status == "fail" and [v["name"] for v in r.data["tensors"] if not v["ok"]] == [name]


def test_nan_payloads_take_the_converting_path():
    """Raw-byte equality means "identical to a fresh conversion" only without NaN: BF16/F16 conversion may change
    a NaN's payload."""
    assert _nan_free(np.array([0x3F80, 0x7F80, 0xFF80], "<u2").view(np.uint8), GGMLQuantizationType.BF16)
    assert not _nan_free(np.array([0x3F80, 0x7F81], "<u2").view(np.uint8), GGMLQuantizationType.BF16)
    assert _nan_free(np.array([0x3C00, 0x7C00], "<u2").view(np.uint8), GGMLQuantizationType.F16)
    assert not _nan_free(np.array([0x7C01], "<u2").view(np.uint8), GGMLQuantizationType.F16)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_release_drops_a_read_tensors_pages_from_the_process(wide):
    """Reading every tensor of a file maps its pages into this process; release() hands them back."""
    _, gguf = wide("f16")
    with read_gguf(gguf) as f:
        total = sum(t.nbytes for t in f.tensors) / 2**20
        before = _rss_mb()
        checksum = sum(int(f.tensor_bytes(t)[::4096].sum()) for t in f.tensors)  # one byte per page: all touched
        touched = _rss_mb()
        for t in f.tensors:
            f.release(t)
        after = _rss_mb()
    print(f"{total:.0f} MB of tensors: RSS {before:.0f} -> {touched:.0f} -> {after:.0f} MB ({checksum})")
    assert touched - before > 0.8 * total
    assert after - before < 0.1 * total
