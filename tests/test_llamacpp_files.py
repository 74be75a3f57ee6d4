"""Files we did not write: GGUFs made by llama.cpp's own convert_hf_to_gguf.py and llama-quantize (from the
llama.cpp inside llama-cpp-python's sdist, built by scripts/llama_tools.py) validate against their source.

The tiny checkpoints use the real EXAONE 4.0 tokenizer (../shared/fixtures): llama.cpp's converter refuses
a BPE pre-tokenizer it does not know, such as make-tiny's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exaone_gguf.cli import app
from exaone_gguf.gguf_io import read_gguf

pytestmark = pytest.mark.slow  # torch / transformers

TOKENIZER = "exaone-4.0-1.2B"
RMS_EPS_MISSING = "exaone.attention.layer_norm_rms_epsilon is missing, so llama.cpp refuses to load the file"

# llama.cpp's converter reads config.json through transformers' AutoConfig first; transformers 5 has a native
# ExaoneConfig that drops EXAONE 3.x's `activation_function`, and the converter's EXAONE class then fails on
# that key. This wrapper runs the converter unchanged except that it reads config.json itself (what the
# converter does when AutoConfig fails, and what transformers 4 gave it).
CONVERT_FROM_CONFIG_JSON = """
import json, runpy, sys
from pathlib import Path
src = Path(sys.argv[1])
sys.argv = [str(src / "convert_hf_to_gguf.py"), *sys.argv[2:]]
sys.path[:0] = [str(src / "gguf-py"), str(src)]
from conversion.base import ModelBase
ModelBase.load_hparams = staticmethod(lambda d, *a, **k: json.loads((Path(d) / "config.json").read_text()))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def llama_convert(tools: dict, src: Path, out: Path, outtype: str, config_json: bool = False) -> Path:
    source = tools["source"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source / "gguf-py"), str(source)])}
    if config_json:
        cmd = [sys.executable, "-c", CONVERT_FROM_CONFIG_JSON, str(source)]
    else:
        cmd = [sys.executable, str(source / "convert_hf_to_gguf.py")]
    res = subprocess.run(
        [*cmd, str(src), "--outfile", str(out), "--outtype", outtype], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0 and out.is_file(), res.stderr[-2000:]
    return out


def llama_quantize(tools: dict, src: Path, out: Path, qtype: str) -> Path:
    res = subprocess.run([str(tools["llama-quantize"]), str(src), str(out), qtype, "2"], capture_output=True, text=True)
    assert res.returncode == 0 and out.is_file(), res.stderr[-2000:]
    return out


def validate(model: Path, reference: Path | None, report: Path):
    args = ["validate", str(model), "--json", str(report)] + (["--reference", str(reference)] if reference else [])
    res = CliRunner().invoke(app, args)
    return res, json.loads(report.read_text()) if report.exists() else None


def tensor_bytes(path: Path) -> dict[str, bytes]:
    f = read_gguf(path)
    out = {t.name: bytes(f.tensor_bytes(t)) for t in f.tensors}
    f.close()
    return out


def test_llamacpp_exaone4_files_validate_like_ours(llama_tools, tiny_dir, tiny_gguf, tmp_path):
    src = tiny_dir("exaone4", TOKENIZER)
    f32 = llama_convert(llama_tools, src, tmp_path / "lc-f32.gguf", "f32")
    for name, path in [("F32", f32), ("Q8_0", llama_quantize(llama_tools, f32, tmp_path / "lc-q8_0.gguf", "Q8_0"))]:
        res, report = validate(path, src, tmp_path / f"{name}.json")
        assert res.exit_code == 0, (name, res.output)
        assert report["passed"] and report["file_type"] == name

    # Q4_K_M: llama-quantize's tensors are ours byte for byte (rope_freqs aside: llama.cpp's converter computes
    # the llama3 factors in float32, we in float64; measured 2 of 32 values 1 ulp apart, <= 9e-8 relative),
    # so validate judges both files alike.
    lc = llama_quantize(llama_tools, f32, tmp_path / "lc-q4_k_m.gguf", "Q4_K_M")
    ours = tiny_gguf("exaone4", "q4_k_m", TOKENIZER)
    a, b = tensor_bytes(lc), tensor_bytes(ours)
    assert sorted(a) == sorted(b)
    assert [n for n in a if a[n] != b[n]] == ["rope_freqs.weight"]
    ra, rb = np.frombuffer(a["rope_freqs.weight"], np.float32), np.frombuffer(b["rope_freqs.weight"], np.float32)
    assert np.abs(ra - rb).max() <= 1e-6 * np.abs(rb).max()
    res_lc, rep_lc = validate(lc, src, tmp_path / "lc.json")
    res_ours, rep_ours = validate(ours, src, tmp_path / "ours.json")
    assert res_lc.exit_code == res_ours.exit_code, (res_lc.output, res_ours.output)
    assert {c["name"]: c["status"] for c in rep_lc["checks"]} == {c["name"]: c["status"] for c in rep_ours["checks"]}
    for key in ("mean_kld", "p99_kld", "same_top1"):  # equal up to the rope_freqs ulp (measured 7e-9 relative)
        assert rep_lc["metrics"][key] == pytest.approx(rep_ours["metrics"][key], rel=1e-6), key
    # The file is right: nothing fails (fidelity below the type's thresholds is a warning), and the tensor check
    # states that every tensor llama-quantize wrote equals a fresh quantization of the source.
    assert res_lc.exit_code == 0 and rep_lc["passed"], [c for c in rep_lc["checks"] if c["status"] == "fail"]
    tensors = next(c for c in rep_lc["checks"] if c["name"] == "tensors: match source")
    n = len(tensor_bytes(lc)) - 1  # every tensor but rope_freqs, which has no source tensor
    assert (
        tensors["status"] == "pass" and f"{n}/{n} identical to a fresh quantization of the source" in tensors["detail"]
    )


def test_llamacpp_exaone3_file_names_the_missing_key(llama_tools, tiny_dir, tmp_path):
    """llama.cpp's converter writes EXAONE 3.x without exaone.attention.layer_norm_rms_epsilon (llama.cpp then
    refuses the file): validate says so in one sentence, with and without the source, instead of crashing."""
    src = tiny_dir("exaone3.5", TOKENIZER)
    lc = llama_convert(llama_tools, src, tmp_path / "lc-exaone3.gguf", "f32", config_json=True)
    f = read_gguf(lc)
    assert "exaone.attention.layer_norm_epsilon" in f.metadata
    assert "exaone.attention.layer_norm_rms_epsilon" not in f.metadata
    f.close()
    for reference in (src, None):
        res, report = validate(lc, reference, tmp_path / f"r-{reference is None}.json")
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (res.exception, res.output)
        details = [c["detail"] for c in report["checks"] if c["status"] == "fail"]
        assert any(d.startswith(RMS_EPS_MISSING) for d in details), details


def test_absent_unk_id_passes_for_bpe_and_a_wrong_one_fails(tiny_dir, tiny_gguf, tmp_path):
    """llama.cpp's converter writes no tokenizer.ggml.unknown_token_id for EXAONE's byte-level BPE (which never
    produces UNK): accepted. A wrong UNK id still fails the special-token check."""
    from gguf_edit import DROP, rewrite

    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.validate.metadata_check import check_special_ids

    ckpt = load_checkpoint(tiny_dir("exaone4"))
    good = tiny_gguf("exaone4", "f32")
    unk = ckpt.tokenizer.unk_token_id
    assert unk is not None
    for kv, status in [
        ({}, "pass"),
        ({"tokenizer.ggml.unknown_token_id": DROP}, "pass"),
        ({"tokenizer.ggml.unknown_token_id": unk + 2}, "fail"),
    ]:
        f = read_gguf(rewrite(good, tmp_path / f"{status}-{len(kv)}.gguf", kv=kv) if kv else good)
        result = check_special_ids(f, ckpt)
        f.close()
        assert result.status == status, (kv, result.detail)
        if status == "fail":
            assert result.detail == f"unknown id {unk + 2}, expected {unk}"
