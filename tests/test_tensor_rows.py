"""The tensor check judges every row of every tensor (validate/tensor_check.py, issue 21).

Honest files, made directly or through an F16 file, are identical row by row to a fresh quantization of the
source (through that rounding); every row damage (swapped rows in the tied token_embd, one row replaced by a
random row or zeroed, a fine-tuned sibling's tensors quantized honestly) fails and is named, at Q4_K_M, Q8_0
and BF16, on the tiny exaone4 and on the trained SmolLM2-135M (EXAONE 3.x layout); the wide Llama covers attn_q's
rows permuted for llama.cpp's RoPE and several chunks per tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf_edit import noisy_sibling, rewrite, rewrite_checkpoint, set_rows, swap_rows
from typer.testing import CliRunner

from exaone_gguf.cli import app
from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.from_gguf import quantize_gguf
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.families import load_checkpoint
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.validate.tensor_check import _nan_free, check_tensors

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

TYPES = ["q4_k_m", "q8_0", "bf16"]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """wide(outtype) -> (checkpoint dir, GGUF path): a 2-layer Llama at hidden 1536, each file built once."""
    from exaone_gguf.tiny import make_tiny

    root = tmp_path_factory.mktemp("rows")
    ckpt = make_tiny("llama", root / "llama-1536", layers=2, hidden=1536, intermediate=1536, seed=3)
    files: dict[str, Path] = {}

    def get(outtype: str) -> tuple[Path, Path]:
        if outtype not in files:
            files[outtype] = convert(ckpt, root / f"wide-{outtype}.gguf", ConvertOptions(outtype=outtype)).output
        return ckpt, files[outtype]

    return get


def tensors_check(gguf: Path, ckpt: Path, imatrix=None):
    with read_gguf(gguf) as f:
        return check_tensors(f, load_checkpoint(ckpt), imatrix, threads=2)


def verdicts(result) -> dict[str, dict]:
    return {v["name"]: v for v in result.data["tensors"]}


def failed_rows(result) -> dict[str, list[int]]:
    """{tensor: rows named as outside their bound} for the failing tensors."""
    return {v["name"]: [r[0] for r in v.get("worst_rows", [])] for v in result.data["tensors"] if not v["ok"]}


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m", "q2_k", "iq4_xs", "bf16", "f16"])
def test_honest_file_is_identical_row_by_row(outtype, tiny_dir, tiny_gguf):
    r = tensors_check(tiny_gguf("exaone4", outtype), tiny_dir("exaone4"))
    print(r.detail)
    n = len(r.data["tensors"])
    assert r.status == "pass" and all(v["identical"] for v in r.data["tensors"]), r.detail
    assert r.detail.startswith(
        f"every row compared ({sum(v['rows'] for v in r.data['tensors'])} rows): {n}/{n} identical"
    )


def test_permuted_q_rows_in_several_chunks_are_identical(wide):
    ckpt, gguf = wide("q4_k_m")
    r = tensors_check(gguf, ckpt)
    assert r.status == "pass" and all(v["identical"] for v in r.data["tensors"]), r.detail


@pytest.fixture(scope="module")
def f32_source(tiny_dir, tmp_path_factory) -> Path:
    """The tiny exaone4 with float32 weights using float32's precision (each times 1 + 1e-3 noise): their F16 and
    BF16 roundings differ from them (a BF16 value's F16 rounding is itself, BF16 sitting inside F16's precision)."""
    import torch

    gen = torch.Generator().manual_seed(1)
    return rewrite_checkpoint(
        tiny_dir("exaone4"),
        tmp_path_factory.mktemp("f32") / "exaone4-f32",
        lambda n, t: t.float() * (1 + 1e-3 * torch.randn(t.shape, generator=gen)),
    )


@pytest.mark.parametrize("route", ["F16", "BF16"])
def test_a_file_made_through_a_16_bit_file_is_identical_through_that_rounding(route, f32_source, tmp_path):
    """llama.cpp's route: the source written as F16 (or BF16), then quantized. Every row of every quantized
    tensor equals a fresh quantization of the source rounded to that type; the detail says so."""
    mid = convert(f32_source, tmp_path / "mid.gguf", ConvertOptions(outtype=route.lower())).output
    q = quantize_gguf(mid, tmp_path / "via.gguf", "q4_k_m").output
    r = tensors_check(q, f32_source)
    print(r.detail)
    vs = r.data["tensors"]
    assert r.status == "pass", r.detail
    quantized = [v for v in vs if v["type"] not in ("F32", "F16", "BF16")]
    # a row equals another candidate too where the rounding changed no choice (counted under the first it equals)
    assert all(v["same"] + sum(v.get("via", {}).values()) == v["rows"] for v in vs), vs
    assert sum(v["via"][route] for v in quantized if "via" in v) > 0.5 * sum(v["rows"] for v in quantized)
    assert not any(v.get("differ") for v in vs)
    assert f"identical to a fresh quantization of the source rounded to {route}" in r.detail


def _damage(kind: str, gguf: Path, tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    """A damaged copy of `gguf` and {tensor: the rows damaged}."""
    rng = np.random.default_rng(0)
    with read_gguf(gguf) as f:
        emb = f.tensor("token_embd.weight")
        gate = f.tensor("blk.1.ffn_gate.weight")
        n_vocab, n_ff = emb.shape[1], gate.shape[1]
        gate_rms = float(np.sqrt(np.mean(f.rows_f32(gate) ** 2)))
        assert "output.weight" not in {t.name for t in f.tensors}  # the embedding is tied: it is the output too
    if kind == "swap":  # 10 pairs of rare tokens (the end of the vocabulary)
        rare = list(range(n_vocab - 20, n_vocab))
        pairs = list(zip(rare[::2], rare[1::2]))
        bad = rewrite(gguf, tmp_path / "bad.gguf", tensors={emb.name: swap_rows(pairs, n_vocab)})
        return bad, {emb.name: rare}
    if kind in ("random", "zero"):
        row = n_ff // 2 + 3
        values = rng.standard_normal(gate.shape[0]) * gate_rms if kind == "random" else np.zeros(gate.shape[0])
        edit = set_rows(GGMLQuantizationType(gate.tensor_type), n_ff, {row: values})
        return rewrite(gguf, tmp_path / "bad.gguf", tensors={gate.name: edit}), {gate.name: [row]}
    raise ValueError(kind)


@pytest.mark.parametrize("outtype", TYPES)
@pytest.mark.parametrize("kind", ["swap", "random", "zero"])
def test_every_damaged_row_is_named(kind, outtype, tiny_dir, tiny_gguf, tmp_path):
    ckpt = tiny_dir("exaone4")
    bad, damaged = _damage(kind, tiny_gguf("exaone4", outtype), tmp_path)
    r = tensors_check(bad, ckpt)
    print(r.detail)
    assert r.status == "fail"
    named = failed_rows(r)
    assert set(named) == set(damaged), r.detail
    for name, rows in damaged.items():
        v = verdicts(r)[name]
        assert v["outside"] == len(rows) and len(named[name]) == min(5, len(rows)) and set(named[name]) <= set(rows), v
        assert f"{name}: {len(rows)} of {v['rows']} rows outside" in r.detail


@pytest.mark.parametrize("outtype", TYPES)
def test_a_fine_tuned_siblings_tensors_fail(outtype, tiny_dir, tmp_path):
    """Every 2-D tensor of a sibling (the source plus 1.5 % noise per row) quantized honestly: each row may stay
    within its own bound at 4 bits, but every 2-D tensor's rows all differ, and their error over a fresh
    quantization's is outside the limit."""
    ckpt = tiny_dir("exaone4")
    sibling = noisy_sibling(ckpt, tmp_path / "sibling", rel=0.015)
    bad = convert(sibling, tmp_path / "bad.gguf", ConvertOptions(outtype=outtype)).output
    r = tensors_check(bad, ckpt)
    print(r.detail)
    two_d = {v["name"] for v in r.data["tensors"] if v["rows"] > 1}
    assert r.status == "fail" and {v["name"] for v in r.data["tensors"] if not v["ok"]} == two_d, r.detail
    for v in r.data["tensors"]:
        if v["name"] in two_d:
            assert v["differ"] == v["rows"] and v["error_ratio"] > v["ratio_limit"], v


def test_whole_tensor_scaled_by_two_percent_fails_by_its_gain(wide, tmp_path):
    """A Q2_K file's ffn_down (Q3_K or Q4_K there): every row scaled by 1.02 stays inside its row bound; the gain
    over the rows that differ is what moves."""
    ckpt, gguf = wide("q2_k")
    name = "blk.1.ffn_down.weight"
    src = load_checkpoint(ckpt)
    with read_gguf(gguf) as f:
        info = f.tensor(name)
        n_rows, qtype = info.shape[1], GGMLQuantizationType(info.tensor_type)
    from exaone_gguf.families import family_for

    m = next(m for m in family_for(src.spec).tensor_map(src.spec) if m.gguf_name == name)
    h = m.open(src.tensors)
    scaled = h.to_f32().reshape(n_rows, -1) * np.float32(1.02)
    edit = set_rows(qtype, n_rows, dict(enumerate(scaled)))
    bad = rewrite(gguf, tmp_path / "scaled.gguf", tensors={name: edit})
    r = tensors_check(bad, ckpt)
    print(r.detail)
    v = verdicts(r)[name]
    assert r.status == "fail" and "gain " in v["problem"] and v["outside"] == 0, v
    assert v["gain"] - v["fresh_gain"] == pytest.approx(0.02, abs=0.002) and v["gain_limit"] < 0.005, v


def test_two_tensors_swapped_fail_every_row(wide, tmp_path):
    ckpt, gguf = wide("q4_k_m")
    names = ["blk.1.ffn_gate.weight", "blk.1.ffn_up.weight"]
    bad = rewrite(gguf, tmp_path / "bad.gguf", swap=tuple(names))
    r = tensors_check(bad, ckpt)
    assert r.status == "fail" and sorted(failed_rows(r)) == names
    assert all(verdicts(r)[n]["outside"] == verdicts(r)[n]["rows"] for n in names)


def test_cli_exit_1_names_the_row_and_full_tensors_is_deprecated(tiny_dir, tiny_gguf, tmp_path):
    ckpt = tiny_dir("exaone4")
    bad, damaged = _damage("zero", tiny_gguf("exaone4", "q4_k_m"), tmp_path)
    ((name, [row]),) = damaged.items()
    for flag in ([], ["--full-tensors"]):
        out = tmp_path / f"report{len(flag)}.json"
        res = CliRunner().invoke(
            app, ["validate", str(bad), "--reference", str(ckpt), "--max-tokens", "16", "--json", str(out), *flag]
        )
        assert res.exit_code == 1, res.output
        t = next(c for c in json.loads(out.read_text())["checks"] if c["name"] == "tensors: match source")
        assert t["status"] == "fail" and f"{name}: 1 of" in t["detail"] and f"rows {row} (error" in t["detail"]
        assert ("--full-tensors is deprecated" in res.output) == bool(flag)


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
    assert r.status == "fail" and failed_rows(r) == {name: [12345 // 1536]}


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


# ------------------------------------------------------------------- the trained network (SmolLM2-135M, EXAONE 3.x)


@pytest.fixture(scope="module")
def real(smollm2, tmp_path_factory):
    """real(outtype, sibling=False) -> GGUF of the trained network (or of its fine-tuned sibling), built once."""
    root = tmp_path_factory.mktemp("real")
    src = smollm2("exaone3")
    files: dict[tuple, Path] = {}

    def get(outtype: str, sibling: bool = False) -> Path:
        key = (outtype, sibling)
        if key not in files:
            if sibling and not (root / "sibling").exists():
                noisy_sibling(src, root / "sibling", rel=0.015)
            ckpt = root / "sibling" if sibling else src
            files[key] = convert(
                ckpt, root / f"{'sib-' * sibling}{outtype}.gguf", ConvertOptions(outtype=outtype)
            ).output
        return files[key]

    return src, get


@pytest.mark.parametrize("outtype", TYPES)
def test_real_network_every_damaged_row_is_named(outtype, real, tmp_path):
    """One file per type carrying the three row damages (each judged on its own rows): 10 swapped pairs of rare
    tokens in the tied token_embd, a random row in blk.3.ffn_gate, a zeroed row in blk.17.ffn_gate. The honest
    file is identical row by row."""
    src, get = real
    gguf = get(outtype)
    honest = tensors_check(gguf, src)
    assert honest.status == "pass" and all(v["identical"] for v in honest.data["tensors"]), honest.detail
    with read_gguf(gguf) as f:
        emb, gate = f.tensor("token_embd.weight"), f.tensor("blk.3.ffn_gate.weight")
        n_vocab, n_ff, qtype = emb.shape[1], gate.shape[1], GGMLQuantizationType(gate.tensor_type)
        rms = float(np.sqrt(np.mean(f.rows_f32(gate) ** 2)))
    rare = list(range(n_vocab - 20, n_vocab))
    random_row = np.random.default_rng(1).standard_normal(gate.shape[0]) * rms
    bad = rewrite(
        gguf,
        tmp_path / "bad.gguf",
        tensors={
            emb.name: swap_rows(list(zip(rare[::2], rare[1::2])), n_vocab),
            gate.name: set_rows(qtype, n_ff, {700: random_row}),
            "blk.17.ffn_gate.weight": set_rows(qtype, n_ff, {1234: np.zeros(gate.shape[0])}),
        },
    )
    r = tensors_check(bad, src)
    print(r.detail)
    named = failed_rows(r)
    assert r.status == "fail" and sorted(named) == sorted([emb.name, gate.name, "blk.17.ffn_gate.weight"]), r.detail
    assert verdicts(r)[emb.name]["outside"] == 20 and set(named[emb.name]) <= set(rare)
    assert named[gate.name] == [700] and named["blk.17.ffn_gate.weight"] == [1234]


@pytest.mark.parametrize("outtype", TYPES)
def test_real_network_fine_tuned_sibling_fails(outtype, real):
    """Every 2-D tensor of the sibling fails: at BF16 and Q8_0 each row is outside its own bound; at Q4_K_M the
    Q4_K tensors' rows stay inside theirs (noise 1.5 % against Q4_K's ~7 %) and the tensor ratio names them
    (measured 1.0145 to 1.025 against a limit of 1.01)."""
    src, get = real
    r = tensors_check(get(outtype, sibling=True), src)
    print(r.detail)
    vs = r.data["tensors"]
    two_d = {v["name"] for v in vs if v["rows"] > 1}
    assert r.status == "fail" and {v["name"] for v in vs if not v["ok"]} == two_d
    assert all(v["differ"] == v["rows"] for v in vs if v["name"] in two_d)
