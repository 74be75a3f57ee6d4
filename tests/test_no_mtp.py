"""`convert --no-mtp`: the MTP blocks left out of K-EXAONE and EXAONE 4.5 files (llama.cpp loads them and never
runs them). The files have num_hidden_layers blocks and no nextn tensors, give llama.cpp's logits of the full files
bit for bit, validate against the same checkpoint, and the option reaches every kind of run (one file, shards, a
release of several types)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import llama_cpp_logits
from gguf_edit import rewrite
from helpers import run_cli

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.publish import publish
from exaone_gguf.tiny import make_tiny

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

# (make-tiny recipe, GGUF arch, layers); tokens past the tiny windows (16 and 8), below the added tokens' ids
CASES = {"k-exaone": ("exaone-moe", 4), "exaone4.5": ("exaone4", 64)}
TOKENS = [int(t) for t in np.random.default_rng(7).integers(72, 3000, size=40)]


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    """(recipe, checkpoint, full f32 file, --no-mtp f32 file)."""
    root = tmp_path_factory.mktemp(request.param)
    ckpt = make_tiny(request.param, root / "ckpt")
    full = convert(ckpt, root / "full.gguf", ConvertOptions(outtype="f32")).output
    short = convert(ckpt, root / "no-mtp.gguf", ConvertOptions(outtype="f32", no_mtp=True)).output
    return request.param, ckpt, full, short


def layout(path) -> tuple[int, int | None, set[int], set[str]]:
    """block_count, nextn_predict_layers (None: absent), blocks with nextn tensors, tensor names."""
    f = read_gguf(path)
    arch = f.get("general.architecture")
    names = {t.name for t in f.tensors}
    out = (
        f.get(f"{arch}.block_count"),
        f.get(f"{arch}.nextn_predict_layers"),
        {int(n.split(".")[1]) for n in names if ".nextn." in n},
        names,
    )
    f.close()
    return out


def test_no_mtp_file_has_no_mtp_blocks(pair):
    recipe, _, full, short = pair
    arch, n = CASES[recipe]
    blocks, nextn, mtp, names = layout(full)
    assert (blocks, nextn, mtp) == (n + 1, 1, {n})
    blocks, nextn, mtp, short_names = layout(short)
    # llama.cpp's converters write nextn_predict_layers 0 for exaone-moe always, and none for exaone4 without MTP
    assert (blocks, nextn, mtp) == (n, 0 if arch == "exaone-moe" else None, set())
    assert short_names == {x for x in names if not x.startswith(f"blk.{n}.")}


def test_no_mtp_logits_equal_the_full_files(pair):
    """llama.cpp never runs the MTP block, so dropping it changes no logit: bit-exact, not within a tolerance."""
    _, _, full, short = pair
    a, b = llama_cpp_logits(full, TOKENS), llama_cpp_logits(short, TOKENS)
    assert a.shape == b.shape and np.isfinite(a).all()
    assert np.array_equal(a, b)


def validate(gguf, ckpt) -> tuple[int, dict[str, tuple[str, str]]]:
    report = gguf.with_suffix(".json")
    r = run_cli("validate", str(gguf), "--reference", str(ckpt), "--json", str(report), "--max-tokens", "48")
    return r.returncode, {c["name"]: (c["status"], c["detail"]) for c in json.loads(report.read_text())["checks"]}


def test_validate_accepts_files_with_and_without_mtp(pair):
    _, ckpt, full, short = pair
    for path in (full, short):
        code, checks = validate(path, ckpt)
        assert code == 0, {k: v for k, v in checks.items() if v[0] == "fail"}
    assert "metadata: MTP blocks" not in checks and checks["metadata: tensors"][0] == "pass"


def test_validate_fails_a_file_that_drops_the_tensors_but_keeps_the_count(pair, tmp_path):
    """The tensors gone, block_count still counting the MTP block: llama.cpp would look for a layer that is not
    there. Validate against the checkpoint fails (the hyperparameters of a file without MTP blocks)."""
    recipe, ckpt, _, short = pair
    arch, n = CASES[recipe]
    bad = rewrite(short, tmp_path / "bad.gguf", kv={f"{arch}.block_count": n + 1})
    code, checks = validate(bad, ckpt)
    assert code == 1 and checks["metadata: hyperparameters"][0] == "fail", checks["metadata: hyperparameters"]


def test_no_mtp_reaches_shards_and_releases(tmp_path):
    ckpt = make_tiny("k-exaone", tmp_path / "ckpt")
    r = convert(ckpt, tmp_path / "s.gguf", ConvertOptions(outtype="q8_0", no_mtp=True, split_max_tensors=20))
    assert len(r.files) > 1
    names = {t.name for p in r.files for t in read_gguf(p).tensors}
    assert not any(".nextn." in x or x.startswith("blk.4.") for x in names)
    rel = publish(ckpt, tmp_path / "rel", ConvertOptions(outtype="bf16,q4_k_m", no_mtp=True))
    for v in rel.variants:
        blocks, nextn, mtp, _ = layout(v.files[0])
        assert (blocks, nextn, mtp) == (4, 0, set()), v.outtype


def test_cli_no_mtp(tmp_path):
    ckpt = make_tiny("k-exaone", tmp_path / "ckpt")
    r = run_cli("convert", str(ckpt), "-o", str(tmp_path / "m.gguf"), "--outtype", "q8_0", "--no-mtp")
    assert r.returncode == 0, r.stderr
    assert layout(tmp_path / "m.gguf")[:3] == (4, 0, set())


def test_quantize_no_mtp_writes_the_bytes_of_convert_no_mtp(pair, tmp_path):
    """quantize --no-mtp from the full F32 file gives the very file convert --no-mtp writes at that type."""
    from exaone_gguf.convert.from_gguf import quantize_gguf

    _, ckpt, full, _ = pair
    direct = convert(ckpt, tmp_path / "direct.gguf", ConvertOptions(outtype="q4_k_m", no_mtp=True)).output
    quantize_gguf(full, tmp_path / "q.gguf", "q4_k_m", no_mtp=True)
    assert (tmp_path / "q.gguf").read_bytes() == direct.read_bytes()
    quantize_gguf(full, tmp_path / "kept.gguf", "q4_k_m")  # without the option the blocks stay
    assert layout(tmp_path / "kept.gguf")[:3] == layout(full)[:3]
