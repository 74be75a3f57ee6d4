"""Bad input to convert: exit 2, one sentence naming the file and the problem, nothing at the output path."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import run_cli


def run_convert(src, out, *extra):
    return run_cli("convert", src, "-o", out, *extra)


@pytest.fixture
def src(tiny_dir, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(tiny_dir("exaone4"), dst)
    return dst


def edit_config(src, **changes):
    cfg = json.loads((src / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (src / "config.json").write_text(json.dumps(cfg))


def assert_refused(res, out, *words):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


@pytest.mark.slow
def test_unsupported_architecture_lists_supported(src, tmp_path):
    edit_config(src, architectures=["Qwen2ForCausalLM"])
    out = tmp_path / "o.gguf"
    assert_refused(
        run_convert(src, out), out, "config.json", "Qwen2ForCausalLM", "ExaoneForCausalLM", "Exaone4ForCausalLM"
    )


def test_missing_config_key_is_named(src, tmp_path):
    edit_config(src, hidden_size=None)
    out = tmp_path / "o.gguf"
    assert_refused(run_convert(src, out), out, "config.json", "hidden_size")


def test_mistyped_config_key_is_named(src, tmp_path):
    edit_config(src, num_hidden_layers="four")
    out = tmp_path / "o.gguf"
    assert_refused(run_convert(src, out), out, "num_hidden_layers", "integer")


def test_missing_tokenizer_files_are_named(src, tmp_path):
    (src / "tokenizer.json").unlink()
    out = tmp_path / "o.gguf"
    assert_refused(run_convert(src, out), out, "tokenizer.json", "vocab.json", "merges.txt")


def test_shape_disagreeing_with_config(src, tmp_path):
    edit_config(src, intermediate_size=1024)
    out = tmp_path / "o.gguf"
    assert_refused(run_convert(src, out), out, "mlp.gate_proj.weight", "shape")


@pytest.mark.slow
def test_existing_output_needs_force_and_input_is_never_output(src, tmp_path):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    assert_refused_keep = run_convert(src, out)
    assert assert_refused_keep.returncode == 2 and "--force" in assert_refused_keep.stderr
    assert out.read_bytes() == b"keep me"
    inside = src / "model.gguf"
    res = run_convert(src, inside)
    assert res.returncode == 2 and "source directory" in res.stderr and not inside.exists()
    ok = run_convert(src, out, "--force", "--outtype", "q8_0")
    assert ok.returncode == 0, ok.stderr
    assert out.read_bytes()[:4] == b"GGUF"


def test_unknown_outtype(src, tmp_path):
    out = tmp_path / "o.gguf"
    assert_refused(run_convert(src, out, "--outtype", "q9_9"), out, "q9_9")


@pytest.mark.slow
def test_make_tiny_is_deterministic_and_refuses_unknown_family(tmp_path):
    from exaone_gguf.errors import InputError
    from exaone_gguf.tiny import make_tiny

    a = make_tiny("exaone4", tmp_path / "a", seed=3)
    b = make_tiny("exaone4", tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    with pytest.raises(InputError, match="exaone4-hybrid"):
        make_tiny("exaone5", tmp_path / "c")
    assert not (tmp_path / "c").exists()
