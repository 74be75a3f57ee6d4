"""`convert SRC --mmproj`: EXAONE 4.5's vision tower as llama.cpp's projector file (issue 13, vision half).

The strongest check: key for key and tensor for tensor (bytes) equal to what llama.cpp's own converter
(convert_hf_to_gguf.py --mmproj, from the llama.cpp that llama-cpp-python vendors) writes for the same tiny
checkpoint, at every type it offers. Then the bad inputs of item 5.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from exaone_gguf.gguf_io import read_gguf

pytestmark = pytest.mark.slow  # converts and quantizes of tiny models

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# keys llama.cpp's converter writes from the folder name / a parameter count that need not match ours
NAMING_KEYS = {"general.name"}


def run_convert(src, out, *extra):
    return run_cli("convert", src, "-o", out, "--mmproj", *extra)


def llama_mmproj(tools: dict, src: Path, out: Path, outtype: str) -> Path:
    source = tools["source"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source / "gguf-py"), str(source)])}
    res = subprocess.run(
        [sys.executable, str(source / "convert_hf_to_gguf.py"), str(src), "--mmproj"]
        + ["--outfile", str(out), "--outtype", outtype],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and out.is_file(), res.stderr[-2000:]
    return out


def contents(path: Path) -> tuple[dict, dict, list[str]]:
    f = read_gguf(path)
    kv = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in f.metadata.items() if k not in NAMING_KEYS}
    tensors = {t.name: (t.tensor_type.name, tuple(t.shape), bytes(f.tensor_bytes(t))) for t in f.tensors}
    order = [t.name for t in f.tensors]
    f.close()
    return kv, tensors, order


@pytest.mark.parametrize("outtype", OUTTYPES)
def test_equals_llamacpp_converter(outtype, tiny45_dir, llama_tools, tmp_path):
    ours = tmp_path / "ours.gguf"
    res = run_convert(tiny45_dir, ours, "--outtype", outtype)
    assert res.returncode == 0, res.stderr
    kv, tensors, order = contents(ours)
    kv_ref, tensors_ref, order_ref = contents(llama_mmproj(llama_tools, tiny45_dir, tmp_path / "ref.gguf", outtype))
    # every key llama.cpp writes, with its value; ours adds only spatial_merge_size (clip.cpp reads it, default 2)
    assert {k: kv[k] for k in kv_ref} == kv_ref
    assert set(kv) - set(kv_ref) == {"clip.vision.spatial_merge_size"}
    assert order == order_ref
    assert tensors == tensors_ref  # names, types, shapes and bytes


def test_keys_clip_reads(tiny45_dir, tmp_path):
    out = tmp_path / "m.gguf"
    assert run_convert(tiny45_dir, out, "--outtype", "f16").returncode == 0
    kv, tensors, _ = contents(out)
    assert kv["general.architecture"] == "clip"
    assert kv["clip.projector_type"] == "exaone4_5"
    assert kv["clip.use_silu"] is True
    assert kv["clip.vision.image_min_pixels"] == 3136 and kv["clip.vision.image_max_pixels"] == 200704
    assert kv["clip.vision.attention.head_count"] == 4 and kv["clip.vision.attention.head_count_kv"] == 2
    assert kv["clip.vision.n_wa_pattern"] == 2  # fullatt_block_indexes [1, 3]
    assert kv["clip.vision.window_size"] == 112 and kv["clip.vision.patch_size"] == 14
    assert kv["clip.vision.projection_dim"] == 256
    # the conv3d kernel's two temporal halves, F16 in an F16 file; the norms F32
    assert tensors["v.patch_embd.weight"][:2] == ("F16", (14, 14, 3, 64))
    assert tensors["v.patch_embd.weight.1"][:2] == ("F16", (14, 14, 3, 64))
    assert tensors["v.blk.0.attn_qkv.weight"][:2] == ("F16", (64, 128))
    assert tensors["v.post_ln.weight"][0] == "F32"


@pytest.fixture
def src45(tiny45_dir, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(tiny45_dir, dst)
    return dst


def assert_refused(res, out, *words):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_uneven_fullatt_block_indexes_refused(src45, tmp_path):
    cfg = json.loads((src45 / "config.json").read_text())
    cfg["vision_config"]["fullatt_block_indexes"] = [1, 2]
    (src45 / "config.json").write_text(json.dumps(cfg))
    before = (src45 / "config.json").read_bytes()
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(src45, out), out, "config.json", "fullatt_block_indexes", "evenly spaced")
    assert (src45 / "config.json").read_bytes() == before


def test_fullatt_list_short_of_the_depth_refused(src45, tmp_path):
    # evenly spaced but stops early: llama.cpp's converter accepts it and the runtime would attend globally in
    # block 3, which the source windows
    cfg = json.loads((src45 / "config.json").read_text())
    cfg["vision_config"]["fullatt_block_indexes"] = [1]
    (src45 / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(src45, out), out, "config.json", "fullatt_block_indexes", "[1, 3]")


def test_window_size_llamacpp_ignores_refused(src45, tmp_path):
    # clip.cpp hard-codes 112-pixel windows for exaone4_5; another size would run wrongly there
    cfg = json.loads((src45 / "config.json").read_text())
    cfg["vision_config"]["window_size"] = 56
    (src45 / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(src45, out), out, "config.json", "window_size", "112")


def test_missing_preprocessor_config_refused(src45, tmp_path):
    (src45 / "preprocessor_config.json").unlink()
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(src45, out), out, "preprocessor_config.json", "not found")


def test_preprocessor_without_max_pixels_refused(src45, tmp_path):
    pre = json.loads((src45 / "preprocessor_config.json").read_text())
    del pre["max_pixels"]
    (src45 / "preprocessor_config.json").write_text(json.dumps(pre))
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(src45, out), out, "preprocessor_config.json", "max_pixels")


def test_text_only_checkpoint_refused(tiny_dir, tmp_path):
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(tiny_dir("exaone4"), out), out, "config.json", "no vision_config")


def test_quantized_outtype_refused(tiny45_dir, tmp_path):
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(tiny45_dir, out, "--outtype", "q4_k_m"), out, "q4_k_m", "q8_0")


def test_missing_vision_tensor_refused(src45, tmp_path):
    from safetensors.numpy import load_file, save_file

    weights = load_file(src45 / "model.safetensors")
    del weights["model.visual.blocks.2.attn.qkv.bias"]
    save_file(weights, src45 / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(src45, out), out, "model.visual.blocks.2.attn.qkv.bias", "missing")


def test_release_projector_hook(tiny45_dir, tiny_dir, tmp_path):
    # a release of an EXAONE 4.5 source writes mmproj-{Basename}-{Size}-F16.gguf beside the text files, hashed
    # while written for SHA256SUMS, byte-identical to `convert --mmproj --outtype f16`; a text-only source none
    import hashlib

    from exaone_gguf.publish.modelfile import render_modelfile
    from exaone_gguf.vision import release_projector_path, write_release_projector

    assert release_projector_path(tiny_dir("exaone4"), tmp_path, "EXAONE-4.0-1.2B") is None
    path = release_projector_path(tiny45_dir, tmp_path, "EXAONE-4.5-33B")
    assert path == tmp_path / "mmproj-EXAONE-4.5-33B-F16.gguf"
    result, digest = write_release_projector(tiny45_dir, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    single = tmp_path / "single.gguf"
    assert run_convert(tiny45_dir, single, "--outtype", "f16").returncode == 0
    assert single.read_bytes() == path.read_bytes() and result.file_size == path.stat().st_size
    text = render_modelfile("EXAONE-4.5-33B-Q4_K_M.gguf", None, projector=path.name)
    assert text.splitlines()[1:3] == ["FROM ./EXAONE-4.5-33B-Q4_K_M.gguf", f"FROM ./{path.name}"]


def test_real_exaone45_config_keys():
    # the 33B's vision_config and preprocessor_config.json (../shared/fixtures) give llama.cpp's keys
    from conftest import fixture_path

    from exaone_gguf.gguf_io.writer import GGUFPlan
    from exaone_gguf.vision import read_vision_spec
    from exaone_gguf.vision.mmproj import add_vision_keys

    spec = read_vision_spec(fixture_path("exaone-4.5-33b"))
    plan = GGUFPlan()
    add_vision_keys(plan, spec, "f16", 0)
    kv = {k: v[1] for k, v in plan.kv.items()}
    assert kv["clip.projector_type"] == "exaone4_5"
    assert kv["clip.vision.n_wa_pattern"] == 8  # fullatt_block_indexes [7, 15, 23, 31]
    assert kv["clip.vision.block_count"] == 32 and kv["clip.vision.embedding_length"] == 1280
    assert kv["clip.vision.feed_forward_length"] == 3420
    assert kv["clip.vision.attention.head_count"] == 16 and kv["clip.vision.attention.head_count_kv"] == 8
    assert kv["clip.vision.projection_dim"] == 5120 and kv["clip.vision.window_size"] == 112
    assert kv["clip.vision.image_min_pixels"] == 3136 and kv["clip.vision.image_max_pixels"] == 12845056
    assert kv["clip.vision.attention.layer_norm_epsilon"] == 1e-6


def test_convert_validate_keeps_report(tiny45_dir, tmp_path):
    out = tmp_path / "m.gguf"
    res = run_convert(tiny45_dir, out, "--outtype", "q8_0", "--validate")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "m.validation.json").read_text())
    assert report["passed"] and report["file_type"] == "Q8_0"
    assert {c["name"] for c in report["checks"]} >= {"window pattern", "image embedding"}


def test_text_only_flag_refused(tiny45_dir, tmp_path):
    out = tmp_path / "m.gguf"
    assert_refused(run_convert(tiny45_dir, out, "--split-max-size", "1G"), out, "--split-max-size", "--mmproj")


def test_vision_config_under_an_architecture_without_a_tower_refused(src45, tmp_path):
    # the tower's tensor table is the family's (Family.vision_tower): a text-only family's architecture has none
    cfg = json.loads((src45 / "config.json").read_text())
    cfg["architectures"] = ["Exaone4ForCausalLM"]
    (src45 / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "m.gguf"
    assert_refused(
        run_convert(src45, out), out, "config.json", "'Exaone4ForCausalLM' has no vision tower", "Exaone4_5_"
    )
