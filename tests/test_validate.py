"""The validator passes honest files and fails each kind of broken file on the matching check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_FAMILIES
from gguf import GGUFValueType
from gguf_edit import DROP, rewrite, scale_f32
from helpers import run_cli, template_for

from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.validate import validate

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def failed(report) -> set[str]:
    return {c.name for c in report.checks if c.status == "fail"}


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("outtype", ["f32", "bf16", "q8_0"])
def test_honest_files_pass(family, outtype, tiny_dir, tiny_gguf):
    report = validate(tiny_gguf(family, outtype), tiny_dir(family))
    print(
        f"{family} {outtype}: {report.metrics['mean_kld']:.2e} KLD, {report.metrics['same_top1']:.1f}% top-1, "
        f"{report.seconds:.1f} s"
    )
    assert report.passed, [(c.name, c.detail) for c in report.checks if c.status == "fail"]
    assert report.metrics["n_tokens"] == 256
    # every part of the validator ran
    names = set(statuses(report))
    for part in (
        "metadata: hyperparameters",
        "tokenizer: matches source",
        "chat_template.matches_source",
        "chat: completion stops on EOS",
        "logits: mean kld",
    ):
        assert part in names


def test_without_reference_runs_source_free_checks(tiny_gguf):
    report = validate(tiny_gguf("exaone4", "q8_0"))
    assert report.passed
    names = set(statuses(report))
    assert {"logits: finite", "tokenizer: round trip", "chat_template.renders"} <= names
    assert report.metrics is None


# --- deliberately broken files: each fails the matching check ---------------------------------------------


def _broken(tiny_gguf, tmp_path, family, outtype="f32", **edits):
    return rewrite(tiny_gguf(family, outtype), tmp_path / "broken.gguf", **edits)


def test_wrong_rope_base(tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(tiny_gguf, tmp_path, "exaone4", kv={"exaone4.rope.freq_base": 10000.0})
    assert "metadata: hyperparameters" in failed(validate(bad, tiny_dir("exaone4")))


def test_two_tensors_of_a_layer_swapped(tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(tiny_gguf, tmp_path, "exaone3", swap=("blk.1.ffn_gate.weight", "blk.1.ffn_up.weight"))
    report = validate(bad, tiny_dir("exaone3"))
    assert "metadata: tensors" not in failed(report)  # names and shapes are all right: the tensor check tells
    tensors = next(c for c in report.checks if c.name == "tensors: match source")
    assert (
        tensors.status == "fail"
        and "blk.1.ffn_gate.weight" in tensors.detail
        and "blk.1.ffn_up.weight" in tensors.detail
    )
    # fidelity sees it too: far outside any honest F32 file, a failure without --quality-gate
    kld = next(c for c in report.checks if c.name == "logits: mean kld")
    assert kld.status == "fail" and "far outside any honest F32 file" in kld.detail, kld.detail


def test_eos_set_to_2(tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(tiny_gguf, tmp_path, "exaone4", kv={"tokenizer.ggml.eos_token_id": 2})
    assert "metadata: special tokens" in failed(validate(bad, tiny_dir("exaone4")))


def test_chat_template_removed(tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(tiny_gguf, tmp_path, "exaone4", kv={"tokenizer.chat_template": DROP})
    assert "chat_template.present" in failed(validate(bad, tiny_dir("exaone4")))


def test_chat_template_of_another_family(tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(tiny_gguf, tmp_path, "exaone4", kv={"tokenizer.chat_template": template_for("exaone3.5")})
    assert "chat_template.matches_source" in failed(validate(bad, tiny_dir("exaone4")))


def test_pre_tokenizer_default(tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(tiny_gguf, tmp_path, "exaone3", kv={"tokenizer.ggml.pre": "default"})
    report = validate(bad, tiny_dir("exaone3"))
    pre = next(c for c in report.checks if c.name == "metadata: pre-tokenizer")
    assert pre.status == "warn" and "'default' where exaone-gguf writes 'exaone'" in pre.detail
    # the verdict: llama.cpp then splits digit runs differently from the source tokenizer
    assert "tokenizer: matches source" in failed(report)


def test_rope_freqs_missing_on_llama3_scaled_model(tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(tiny_gguf, tmp_path, "exaone3.5", drop_tensors=("rope_freqs.weight",))
    assert "metadata: rope_freqs (llama3 scaling)" in failed(validate(bad, tiny_dir("exaone3.5")))


def test_sliding_window_keys_dropped_on_hybrid(tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(
        tiny_gguf,
        tmp_path,
        "exaone4-hybrid",
        kv={"exaone4.attention.sliding_window": DROP, "exaone4.attention.sliding_window_pattern": DROP},
    )
    report = validate(bad, tiny_dir("exaone4-hybrid"))
    assert "metadata: sliding window" in failed(report)
    # llama.cpp falls back to a 4096 window: no sliding at all, unlike the source config (an F32 file holds the
    # source's values, so the source's own forward is what llama.cpp on it is compared with)
    assert "source: its own forward vs llama.cpp" in failed(report)


def test_hybrid_with_a_layer_count_llama_cpp_runs_as_global(tiny_dir, tmp_path):
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.tiny import make_tiny

    src = make_tiny("exaone4-hybrid", tmp_path / "ck32", layers=32)
    out = convert(src, tmp_path / "h32.gguf", ConvertOptions(outtype="f32")).output
    report = validate(out, src)
    sw = next(c for c in report.checks if c.name == "metadata: sliding window")
    assert sw.status == "fail" and "64 layers" in sw.detail


def test_token_list_shuffled(tiny_dir, tiny_gguf, tmp_path):
    from exaone_gguf.gguf_io import read_gguf

    tokens = list(read_gguf(tiny_gguf("exaone4", "f32")).get("tokenizer.ggml.tokens"))
    rng = np.random.default_rng(0)
    head = tokens[362:1000]
    rng.shuffle(head)
    tokens[362:1000] = head
    bad = _broken(tiny_gguf, tmp_path, "exaone4", kv={"tokenizer.ggml.tokens": tokens})
    report = validate(bad, tiny_dir("exaone4"))
    assert {"metadata: vocabulary", "tokenizer: matches source"} <= failed(report)


@pytest.mark.parametrize("family,tensor", [("exaone3", "blk.1.ffn_down.weight"), ("exaone4", "blk.1.ffn_gate.weight")])
def test_one_weight_tensor_scaled_by_one_percent(family, tensor, tiny_dir, tiny_gguf, tmp_path):
    bad = _broken(tiny_gguf, tmp_path, family, tensors={tensor: scale_f32(1.01)})
    report = validate(bad, tiny_dir(family))
    assert not any(name.startswith("metadata") for name in failed(report))
    tensors = next(c for c in report.checks if c.name == "tensors: match source")
    assert tensors.status == "fail" and tensor in tensors.detail and "gain 1.01" in tensors.detail
    assert statuses(report)["logits: rel logit diff"] == "warn"


def test_cli_exit_codes_and_json(tiny_dir, tiny_gguf, tmp_path):
    good = tiny_gguf("exaone4", "q8_0")
    cmd = ["validate", good, "--reference", tiny_dir("exaone4")]
    ok = run_cli(*cmd, "--json", tmp_path / "r.json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] and data["file_type"] == "Q8_0" and data["metrics"]["same_top1"] >= 90

    bad = _broken(tiny_gguf, tmp_path, "exaone4", kv={"tokenizer.ggml.eos_token_id": 2})
    res = run_cli("validate", bad, "--reference", tiny_dir("exaone4"))
    assert res.returncode == 1 and "metadata: special tokens" in res.stderr and "Traceback" not in res.stderr

    res = run_cli(*cmd, "--threshold", "max_mean_kld=abc")
    assert res.returncode == 2 and "--threshold" in res.stderr

    res = run_cli("validate", tmp_path / "missing.gguf")
    assert res.returncode == 2 and "missing.gguf" in res.stderr and "Traceback" not in res.stderr


def test_threshold_override_can_fail_a_good_file(tiny_dir, tiny_gguf):
    report = validate(tiny_gguf("exaone4", "q8_0"), tiny_dir("exaone4"), threshold_overrides={"max_mean_kld": 1e-9})
    assert "logits: mean kld" in failed(report)


def test_cuda_without_gpu_build_is_bad_input(tiny_gguf):
    import llama_cpp

    from exaone_gguf.errors import InputError

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build has GPU offload")
    with pytest.raises(InputError, match="CMAKE_ARGS"):
        validate(tiny_gguf("exaone4", "f32"), device="cuda")


_ = GGUFValueType


def test_tensor_types_against_file_type(tiny_dir, tiny_gguf, tmp_path):
    def types_check(path):
        return next(
            c for c in validate(path, tiny_dir("exaone4")).checks if c.name == "metadata: tensor types vs file type"
        )

    # a Q8_0 file that claims to be F16: the tensors are the Q8_0 plan the file records -> fail
    bad = rewrite(tiny_gguf("exaone4", "q8_0"), tmp_path / "mislabelled.gguf", kv={"general.file_type": 1})
    check = types_check(bad)
    assert check.status == "fail" and "says F16" in check.detail and "Q8_0 plan" in check.detail
    # a BF16 file labelled Q8_0 carries more precision than promised, but the label is still wrong -> fail
    more = rewrite(tiny_gguf("exaone4", "bf16"), tmp_path / "richer.gguf", kv={"general.file_type": 7})
    assert types_check(more).status == "fail"
    # ... and without our record (a file from elsewhere), llama-quantize's --tensor-type could have made it: a
    # warning that names the tensors
    plan_keys = {k: DROP for k in read_gguf(more).metadata if k.startswith("quantize.plan.")}
    check = types_check(rewrite(more, tmp_path / "elsewhere.gguf", kv=plan_keys))
    assert check.status == "warn" and "blk.0.attn_q.weight BF16 (expected Q8_0)" in check.detail, check.detail
