"""The projector file proven (issue 13 items 2, 3 and 6, vision half): libmtmd's image embedding against
transformers' vision tower and the numpy reference, validate on an honest file and on broken ones, and a short
multimodal generation with a text GGUF."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from gguf_edit import rewrite
from helpers import run_cli

from exaone_gguf.model.forwards import exaone4_5_vision
from exaone_gguf.runtime.mtmd import mtmd_image_embeddings, write_standin_text_model
from exaone_gguf.validate.mmproj import EMBEDDING_LIMITS, builtin_image, embedding_metrics, validate_mmproj
from exaone_gguf.vision import source_weights

pytestmark = pytest.mark.slow  # torch / transformers

OUTTYPES = ("f32", "f16", "bf16", "q8_0")


@pytest.fixture(scope="module")
def files(tiny45_dir, tmp_path_factory):
    """The projector at every type, and a stand-in text model of the projector's hidden size."""
    root = tmp_path_factory.mktemp("mmproj")
    out = {}
    for t in OUTTYPES:
        out[t] = root / f"mmproj-{t}.gguf"
        res = run_cli("convert", tiny45_dir, "--mmproj", "-o", out[t], "--outtype", t)
        assert res.returncode == 0, res.stderr
    out["text"] = write_standin_text_model(root / "text.gguf", 256)
    return out


@pytest.fixture(scope="module")
def transformers_embedding(tiny45_dir):
    """transformers' own vision tower + merger on the test image, fed as Qwen2VLImageProcessor lays it out
    (each patch's frame repeated over the two temporal slices, patches of a merge unit adjacent)."""
    import torch
    from transformers import Exaone4_5_ForConditionalGeneration

    spec, _ = source_weights(tiny45_dir)
    model = Exaone4_5_ForConditionalGeneration.from_pretrained(
        tiny45_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    patches, gh, gw = exaone4_5_vision.patch_grid(exaone4_5_vision.preprocess(builtin_image(), spec), spec)
    p = spec.patch_size
    pixel_values = patches.reshape(-1, 3, 1, p, p).repeat(2, axis=2).reshape(patches.shape[0], -1)
    with torch.no_grad():
        out = model.model.visual(torch.from_numpy(pixel_values), grid_thw=torch.tensor([[1, gh, gw]]))
    return out.pooler_output.numpy()


def test_reference_agrees_with_transformers(tiny45_dir, transformers_embedding):
    spec, get = source_weights(tiny45_dir)
    ours = exaone4_5_vision.forward(get, spec, builtin_image())
    m = embedding_metrics(ours, transformers_embedding)
    # measured: 1-cos ~1e-14, max relative error 1.3e-6 (float32 summation order)
    assert m["one_minus_cosine"] <= 1e-10 and m["max_rel_error"] <= 5e-6, m


def test_reference_window_attention_matters(tiny45_dir, transformers_embedding):
    # the comparison above can fail: the same tower with every block global is far off
    import dataclasses

    spec, get = source_weights(tiny45_dir)
    all_global = dataclasses.replace(spec, fullatt_block_indexes=tuple(range(spec.depth)))
    m = embedding_metrics(exaone4_5_vision.forward(get, all_global, builtin_image()), transformers_embedding)
    assert m["one_minus_cosine"] > 1e-3, m


@pytest.mark.parametrize("outtype", OUTTYPES)
def test_libmtmd_embedding(outtype, files, tiny45_dir, transformers_embedding):
    spec, get = source_weights(tiny45_dir)
    got = mtmd_image_embeddings(files[outtype], files["text"], builtin_image())
    reference = exaone4_5_vision.forward(get, spec, builtin_image())
    assert got.shape == reference.shape == (96, 256)  # (224 / 28) x (336 / 28) merged patches
    max_1mcos, max_rel = EMBEDDING_LIMITS[outtype.upper()]
    for want in (reference, transformers_embedding):
        m = embedding_metrics(got, want)
        assert m["cosine"] >= 0.9999 if outtype != "q8_0" else m["cosine"] >= 0.9995, m
        assert m["one_minus_cosine"] <= max_1mcos and m["max_rel_error"] <= max_rel, m


def test_validate_passes_with_json_report(files, tiny45_dir, tmp_path):
    report = tmp_path / "r.json"
    res = run_cli("validate", files["f32"], "--reference", tiny45_dir, "--json", report)
    assert res.returncode == 0, res.stderr
    data = json.loads(report.read_text())
    checks = {c["name"]: c for c in data["checks"]}
    assert {n: checks[n]["status"] for n in checks} == {
        "projector type": "pass",
        "window pattern": "pass",
        "vision hyperparameters": "pass",
        "tensors": "pass",
        "patch embedding": "pass",
        "tensor values": "pass",
        "image embedding": "pass",
    }
    emb = checks["image embedding"]["data"]
    assert emb["cosine"] >= 0.9999 and emb["max_rel_error"] <= 2e-3 and emb["n_tokens"] == 96


def test_validate_q8_0_passes(files, tiny45_dir):
    report = validate_mmproj(files["q8_0"], tiny45_dir)
    assert report.passed, [(c.name, c.detail) for c in report.checks if c.status != "pass"]


def failed(res, report):
    assert res.returncode == 1, res.stderr
    return {c["name"] for c in json.loads(report.read_text())["checks"] if c["status"] == "fail"}


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_wrong_n_wa_pattern_fails(outtype, files, tiny45_dir, tmp_path):
    bad = rewrite(files[outtype], tmp_path / "bad.gguf", kv={"clip.vision.n_wa_pattern": 4})
    report = tmp_path / "r.json"
    names = failed(run_cli("validate", bad, "--reference", tiny45_dir, "--json", report), report)
    assert "window pattern" in names
    assert "image embedding" in names  # llama.cpp then windows block 1 and 2 that the source runs globally


def test_qwen25vl_projector_type_fails(files, tiny45_dir, tmp_path):
    bad = rewrite(files["f32"], tmp_path / "bad.gguf", kv={"clip.projector_type": gguf.VisionProjectorType.QWEN25VL})
    report = tmp_path / "r.json"
    names = failed(run_cli("validate", bad, "--reference", tiny45_dir, "--json", report), report)
    assert "projector type" in names


def test_swapped_patch_embedding_halves_fail(files, tiny45_dir, tmp_path):
    bad = rewrite(files["f32"], tmp_path / "bad.gguf", swap=("v.patch_embd.weight", "v.patch_embd.weight.1"))
    report = tmp_path / "r.json"
    res = run_cli("validate", bad, "--reference", tiny45_dir, "--json", report)
    assert failed(res, report) == {"patch embedding"}  # a still image repeats its frame: only the tensors tell
    assert "swapped" in json.dumps(json.loads(report.read_text()))


def test_changed_tensor_fails(files, tiny45_dir, tmp_path):
    def scale(raw):
        return (raw.view(np.float32) * np.float32(1.02)).view(np.uint8)

    bad = rewrite(files["f32"], tmp_path / "bad.gguf", tensors={"v.blk.2.ffn_up.weight": scale})
    report = tmp_path / "r.json"
    names = failed(run_cli("validate", bad, "--reference", tiny45_dir, "--json", report), report)
    assert "tensor values" in names


def test_wrong_hyperparameter_fails(files, tiny45_dir, tmp_path):
    bad = rewrite(files["f32"], tmp_path / "bad.gguf", kv={"clip.vision.image_max_pixels": 1003520})
    report = tmp_path / "r.json"
    assert "vision hyperparameters" in failed(
        run_cli("validate", bad, "--reference", tiny45_dir, "--json", report), report
    )


def test_text_model_with_multimodal_generation(files, tiny_dir, tmp_path):
    # a text GGUF of the projector's hidden size (make-tiny exaone4: 256) with the projector, no reference:
    # the text checks, the projector's own checks, and a few tokens generated after the image
    text = tmp_path / "text.gguf"
    assert run_cli("convert", tiny_dir("exaone4"), "-o", text, "--outtype", "f32").returncode == 0
    report = tmp_path / "r.json"
    res = run_cli("validate", text, "--mmproj", files["q8_0"], "--json", report)
    assert res.returncode == 0, res.stderr
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    assert checks["multimodal generation"]["status"] == "pass"
    assert len(checks["multimodal generation"]["data"]["tokens"]) == 4
    assert checks["projector type"]["status"] == "pass"


def test_text_model_of_another_size_refused(files, tmp_path):
    text = write_standin_text_model(tmp_path / "text128.gguf", 128)
    res = run_cli("validate", text, "--mmproj", files["f32"])
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "mmproj-f32.gguf" in res.stderr


def test_exaone45_release_with_projector_validates(tiny_dir, tmp_path):
    # make-tiny exaone4.5 (text + vision + MTP): a release writes the projector beside the text file (SHA256SUMS,
    # a second FROM line), and validate TEXT --mmproj MMPROJ --reference SRC passes every text and vision check
    src = tiny_dir("exaone4.5")
    out = tmp_path / "rel"
    res = run_cli("convert", src, "-o", f"{out}/", "--outtype", "q8_0")
    assert res.returncode == 0, res.stderr
    [text] = out.glob("*-Q8_0.gguf")
    [projector] = out.glob("mmproj-*-F16.gguf")
    assert projector.name == "mmproj-" + text.name.replace("-Q8_0.gguf", "-F16.gguf")
    assert projector.name in (out / "SHA256SUMS").read_text()
    modelfile = (out / text.name.replace(".gguf", ".Modelfile")).read_text().splitlines()
    assert modelfile[1:3] == [f"FROM ./{text.name}", f"FROM ./{projector.name}"]
    report = tmp_path / "r.json"
    res = run_cli("validate", text, "--mmproj", projector, "--reference", src, "--json", report)
    assert res.returncode == 0, res.stderr
    checks = {c["name"]: c["status"] for c in json.loads(report.read_text())["checks"]}
    assert checks["image embedding"] == "pass" and checks["multimodal generation"] == "pass"
    assert checks["window pattern"] == "pass" and checks["patch embedding"] == "pass"


def test_exaone45_release_with_bad_vision_config_writes_nothing(tiny_dir, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_dir("exaone4.5"), src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["vision_config"]["fullatt_block_indexes"] = [1, 2]
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "rel"
    res = run_cli("convert", src, "-o", f"{out}/", "--outtype", "q8_0")
    assert res.returncode == 2, res.stderr
    assert "fullatt_block_indexes" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_exaone45_release_validate_checks_the_projector(tiny_dir, tmp_path):
    # convert --validate of an EXAONE 4.5 release: the projector gets validate MMPROJ --reference SRC's checks
    # and a generation with the first text file, its own report (in SHA256SUMS) and a row in the card
    src = tiny_dir("exaone4.5")
    out = tmp_path / "rel"
    res = run_cli("convert", src, "-o", f"{out}/", "--outtype", "q8_0", "--validate", "--json")
    assert res.returncode == 0, res.stderr
    [projector] = out.glob("mmproj-*-F16.gguf")
    report = out / projector.name.replace(".gguf", ".validation.json")
    data = json.loads(report.read_text())
    checks = {c["name"]: c for c in data["checks"]}
    assert data["passed"] and all(c["status"] == "pass" for c in checks.values()), checks
    assert {"image embedding", "multimodal generation", "tensor values", "window pattern"} <= set(checks)
    emb = checks["image embedding"]["data"]
    card = (out / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith(f"| [{projector.name}]"))
    assert f"{emb['cosine']:.6f}" in row and f"{emb['max_rel_error']:.2e}" in row
    assert f"[passed]({report.name})" in row
    assert report.name in (out / "SHA256SUMS").read_text()
    printed = json.loads(res.stdout)
    assert printed["projector_passed"] is True and printed["projector_report"] == str(report)


def test_exaone45_release_with_failing_projector_fails(tiny_dir, tmp_path, monkeypatch):
    # the release's projector altered after it is written (a block's up projection 2% larger): the release's
    # validation fails as for a failing text variant, after writing every file, the card saying FAILED
    import hashlib
    import os

    import exaone_gguf.publish as pub
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.errors import ValidationFailed

    real = pub.write_release_projector

    def altered(src, path, progress=None):
        result, _ = real(src, path, progress)

        def scale(raw):
            return (raw.view(np.float16) * np.float16(1.02)).view(np.uint8)

        os.replace(rewrite(path, path.with_suffix(".tmp"), tensors={"v.blk.2.ffn_up.weight": scale}), path)
        return result, hashlib.sha256(path.read_bytes()).hexdigest()

    monkeypatch.setattr(pub, "write_release_projector", altered)
    out = tmp_path / "rel"
    with pytest.raises(ValidationFailed, match="mmproj-"):
        pub.publish(tiny_dir("exaone4.5"), out, ConvertOptions(outtype="q8_0", validate=True))
    [projector] = out.glob("mmproj-*-F16.gguf")
    report = json.loads((out / projector.name.replace(".gguf", ".validation.json")).read_text())
    assert not report["passed"]
    assert "tensor values" in {c["name"] for c in report["checks"] if c["status"] == "fail"}
    assert "FAILED" in next(line for line in (out / "README.md").read_text().splitlines() if projector.name in line)
    [text_report] = out.glob("*-Q8_0.validation.json")
    assert json.loads(text_report.read_text())["passed"]


def test_exaone45_release_projector_failure_leaves_nothing(tiny_dir, tmp_path):
    # a vision tensor missing from the checkpoint is found when the projector is planned, after the text files
    # are written: those go too (as write_outputs removes a write's finished files), the folder this run made
    # goes, and the source is untouched
    import shutil

    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(tiny_dir("exaone4.5"), src)
    [st] = src.glob("*.safetensors")
    tensors = load_file(st)
    [gone] = [k for k in tensors if k.endswith("blocks.1.mlp.up_proj.weight")]
    del tensors[gone]
    save_file(tensors, st, metadata={"format": "pt"})
    before = {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()}
    out = tmp_path / "rel"
    res = run_cli("convert", src, "-o", f"{out}/", "--outtype", "q8_0,bf16")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "up_proj" in res.stderr
    assert not out.exists()
    kept = tmp_path / "kept"  # a folder that was there before: left, with only what it held
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    res = run_cli("convert", src, "-o", f"{kept}/", "--outtype", "q8_0")
    assert res.returncode == 2, res.stderr
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]
    assert {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()} == before
