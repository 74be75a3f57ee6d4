"""Validate's expectations come from the source and from the file's own record, not from family constants:
special tokens, chat tokens and the chat template from the source's tokenizer files and template (a ChatML
network converted as EXAONE 3.x passes); tensor types from llama.cpp's mixture with the per-tensor controls and
the size-target plan the file records (honest --tensor-type / --pure / --leave-output-tensor / --target-* files
pass, a relabelled file fails whatever keys it carries, files from llama-quantize with options get a warning
that names the tensors)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf_edit import DROP, rewrite
from helpers import run_cli, template_for

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.from_gguf import quantize_gguf
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.quantize.mixtures import TypeOverrides, parse_tensor_types
from exaone_gguf.validate import validate
from exaone_gguf.validate.metadata_check import check_metadata

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

TYPES = "metadata: tensor types vs file type"
SPECIAL = "metadata: special tokens"
CHAT = "tokenizer: chat template tokens"
# every check that reads the chat tokens and template (the source's, or the file's own)
SOURCE_CHECKS = (SPECIAL, CHAT, "chat_template.matches_source", "chat_template.llama_cpp_python", TYPES)

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def checks(report) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in report.checks}


def types_check(path: Path) -> tuple[str, str]:
    """The tensor-type check alone (it needs no source: the file's own record)."""
    f = read_gguf(path)
    try:
        c = next(c for c in check_metadata(f, None) if c.name == TYPES)
    finally:
        f.close()
    return c.status, c.detail


@pytest.fixture(scope="module")
def chatml_dir(tiny_dir, tmp_path_factory) -> Path:
    """Tiny EXAONE 3.x (`ExaoneForCausalLM`) whose tokenizer and template are ChatML (`<|im_start|>` /
    `<|im_end|>` at the ids of EXAONE's `[|user|]` / `[|endofturn|]`, EOS `<|im_end|>`): an EXAONE fine-tune
    with another chat format."""
    out = tmp_path_factory.mktemp("chatml") / "exaone3-chatml"
    shutil.copytree(tiny_dir("exaone3"), out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        p = out / name
        if p.exists():
            text = p.read_text(encoding="utf-8")
            p.write_text(text.replace('"[|user|]"', '"<|im_start|>"').replace('"[|endofturn|]"', '"<|im_end|>"'))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["chat_template"] = CHATML
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False))
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def chatml_gguf(chatml_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("chatml-gguf")
    cache: dict[str, Path] = {}

    def get(outtype: str) -> Path:
        if outtype not in cache:
            cache[outtype] = convert(chatml_dir, root / f"{outtype}.gguf", ConvertOptions(outtype=outtype)).output
        return cache[outtype]

    return get


# --- special tokens, chat tokens, template: the source's own -------------------------------------------------


@pytest.mark.parametrize("outtype", ["f32", "q8_0", "q4_k_m", "q2_k"])
def test_chatml_exaone3_passes(outtype, chatml_dir, chatml_gguf):
    f = read_gguf(chatml_gguf(outtype))
    assert f.get("general.architecture") == "exaone" and f.get("tokenizer.ggml.eos_token_id") == 361
    assert f.get("tokenizer.ggml.tokens")[361] == "<|im_end|>"
    f.close()
    report = validate(chatml_gguf(outtype), chatml_dir, max_tokens=64)
    got = checks(report)
    for name in SOURCE_CHECKS:
        assert got[name][0] == "pass", (name, got[name])
    assert "'<|im_end|>' ends a turn and llama.cpp stops on it" in got[CHAT][1]
    assert report.passed, [(n, d) for n, (s, d) in got.items() if s == "fail"]


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m"])
@pytest.mark.parametrize("family", ["chatml", "exaone4"])
def test_eos_changed_fails_against_the_source(family, outtype, chatml_dir, chatml_gguf, tiny_dir, tiny_gguf, tmp_path):
    src, good = (
        (chatml_dir, chatml_gguf(outtype))
        if family == "chatml"
        else (tiny_dir("exaone4"), tiny_gguf("exaone4", outtype))
    )
    bad = rewrite(good, tmp_path / "eos.gguf", kv={"tokenizer.ggml.eos_token_id": 2})
    got = checks(validate(bad, src, max_tokens=64))
    assert got[SPECIAL][0] == "fail" and "eos id 2, expected 361" in got[SPECIAL][1], got[SPECIAL]


def test_eos_changed_without_a_source(chatml_gguf, tiny_gguf, tmp_path):
    """Without a source only the file's own template and vocabulary are compared, and the message says so: an
    EXAONE file whose EOS no longer is the token its template ends turns with fails (llama.cpp would not stop);
    a ChatML one still stops, since llama.cpp ends generation on `<|im_end|>` by its text whatever the EOS."""
    bad = rewrite(tiny_gguf("exaone4", "q4_k_m"), tmp_path / "e4.gguf", kv={"tokenizer.ggml.eos_token_id": 2})
    got = checks(validate(bad, max_tokens=64))
    assert (
        got[CHAT][0] == "fail"
        and "'[|endofturn|]' (id 361) ends an assistant turn in the file's own template" in got[CHAT][1]
    )
    assert got[SPECIAL][0] == "pass" and "no source: within the file's vocabulary" in got[SPECIAL][1]
    bad = rewrite(chatml_gguf("q4_k_m"), tmp_path / "chatml.gguf", kv={"tokenizer.ggml.eos_token_id": 2})
    got = checks(validate(bad, max_tokens=64))
    assert got[CHAT][0] == "pass" and "of the file's own template and vocabulary" in got[CHAT][1]


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m"])
def test_template_of_another_family_fails(outtype, chatml_dir, chatml_gguf, tiny_dir, tiny_gguf, tmp_path):
    bad = rewrite(chatml_gguf(outtype), tmp_path / "a.gguf", kv={"tokenizer.chat_template": template_for("exaone3.5")})
    assert checks(validate(bad, chatml_dir, max_tokens=64))["chat_template.matches_source"][0] == "fail"
    bad = rewrite(tiny_gguf("exaone4", outtype), tmp_path / "b.gguf", kv={"tokenizer.chat_template": CHATML})
    got = checks(validate(bad, tiny_dir("exaone4"), max_tokens=64))
    assert got["chat_template.matches_source"][0] == "fail"


def test_cli_exit_1_names_the_cause(chatml_dir, chatml_gguf, tmp_path):
    bad = rewrite(chatml_gguf("q8_0"), tmp_path / "eos.gguf", kv={"tokenizer.ggml.eos_token_id": 2})
    res = run_cli("validate", bad, "--reference", chatml_dir, "--json", tmp_path / "r.json")
    assert res.returncode == 1 and SPECIAL in res.stderr, res.stderr[-2000:]
    failed = {
        c["name"]: c["detail"] for c in json.loads((tmp_path / "r.json").read_text())["checks"] if c["status"] == "fail"
    }
    assert list(failed) == [SPECIAL] and "eos id 2, expected 361" in failed[SPECIAL]


# --- tensor types: llama.cpp's mixture and the file's own record ---------------------------------------------

# (our options, llama-quantize's flags, file type): each changes some tensor's type from the mixture's
OVERRIDES = {
    "tensor-type": (
        TypeOverrides(tensor_types=parse_tensor_types(["ffn_down=q2_k"])),
        ["--tensor-type", "ffn_down=q2_k"],
        "q4_k_m",
    ),
    "pure": (TypeOverrides(pure=True), ["--pure"], "q4_k_m"),
    "leave-output-tensor": (TypeOverrides(leave_output_tensor=True), ["--leave-output-tensor"], "q4_k_m"),
    "output-tensor-type": (TypeOverrides(output_tensor_type=T.Q4_0), ["--output-tensor-type", "q4_0"], "q8_0"),
    "token-embedding-type": (TypeOverrides(token_embedding_type=T.Q8_0), ["--token-embedding-type", "q8_0"], "q4_k_m"),
}
FAMILY = "exaone3"  # untied: output.weight is a tensor of its own


@pytest.mark.parametrize("case", OVERRIDES)
def test_honest_files_with_per_tensor_controls_pass(case, tiny_dir, tiny_gguf, tmp_path):
    ov, _, ftype = OVERRIDES[case]
    plain = quantize_gguf(tiny_gguf(FAMILY, "f32"), tmp_path / "plain.gguf", ftype).output
    q = quantize_gguf(tiny_gguf(FAMILY, "f32"), tmp_path / "q.gguf", ftype, overrides=ov).output
    c = convert(tiny_dir(FAMILY), tmp_path / "c.gguf", ConvertOptions(outtype=ftype, overrides=ov)).output
    assert q.read_bytes() == c.read_bytes()
    types = lambda p: {t.name: t.tensor_type for t in read_gguf(p).tensors}  # noqa: E731
    assert types(q) != types(plain)  # the control changed something, or this would prove nothing
    assert types_check(q)[0] == "pass", types_check(q)
    report = validate(q, tiny_dir(FAMILY), max_tokens=64)
    assert report.passed, [(c.name, c.detail) for c in report.checks if c.status == "fail"]
    # the record is what explains them: the same tensors with the record saying "no controls" fail, named
    plain_record = {
        "quantize.plan.tensor_types": [],
        "quantize.plan.pure": False,
        "quantize.plan.leave_output_tensor": False,
    }
    plain_record |= {"quantize.plan.output_tensor_type": "", "quantize.plan.token_embedding_type": ""}
    status, detail = types_check(rewrite(q, tmp_path / "lying.gguf", kv=plain_record))
    differ = [n for n, t in types(q).items() if t != types(plain)[n]]
    assert status == "fail" and differ[0] in detail, (status, detail)


@pytest.mark.parametrize("case", ["tensor-type", "pure", "leave-output-tensor"])
def test_llama_quantize_files_with_controls_warn_by_name(case, llama_tools, tiny_gguf, tmp_path):
    """llama-quantize records no options (the record it copies from our F32 input describes that file): types the
    mixture does not give are a warning that names them."""
    _, flags, ftype = OVERRIDES[case]
    out = tmp_path / "lq.gguf"
    run = subprocess.run(
        [str(llama_tools["llama-quantize"]), *flags, str(tiny_gguf(FAMILY, "f32")), str(out), ftype.upper(), "2"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    f = read_gguf(out)
    assert f.get("quantize.plan.file_type") == 0  # our F32 input's record, copied: it describes an F32 file
    f.close()
    status, detail = types_check(out)
    assert status == "warn" and "records no plan" in detail, (status, detail)
    if case == "tensor-type":
        assert "blk.0.ffn_down.weight Q2_K" in detail


def test_requantized_elsewhere_the_stale_record_is_ignored(llama_tools, tiny_gguf, tmp_path):
    """llama-quantize copies our BF16 file's quantize.plan.* keys into its Q4_K_M: they describe a BF16 file, not
    this one, so the file is judged as one from elsewhere (and its tensors are Q4_K_M's mixture)."""
    out = tmp_path / "lq.gguf"
    cmd = [str(llama_tools["llama-quantize"]), str(tiny_gguf(FAMILY, "bf16")), str(out), "Q4_K_M", "2"]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert read_gguf(out).get("quantize.plan.file_type") == 32  # MOSTLY_BF16, copied
    status, detail = types_check(out)
    assert status == "pass" and "describe a BF16 file, not this one" in detail, detail


# (file made as, relabelled as)
RELABELS = [("q2_k", 7), ("q4_k_m", 7), ("q8_0", 15)]  # 7: MOSTLY_Q8_0, 15: MOSTLY_Q4_K_M


@pytest.mark.parametrize("made_as,label", RELABELS)
def test_relabelled_file_fails_whatever_keys_it_carries(made_as, label, tiny_gguf, tmp_path):
    src = tiny_gguf("exaone4", made_as)
    bpw = {7: 8.5, 15: 4.9}[label]
    target = {"quantize.target.bpw": (V.FLOAT32, bpw)}
    for name, kv in {
        "relabelled": {"general.file_type": label},
        "relabelled, target key": {"general.file_type": label, **target},
        "relabelled, target key, no record": {
            "general.file_type": label,
            **target,
            **{k: DROP for k in read_gguf(src).metadata if k.startswith("quantize.plan.")},
        },
    }.items():
        status, detail = types_check(rewrite(src, tmp_path / "bad.gguf", kv=kv))
        assert status == "fail", (name, detail)
        print(f"{made_as} as {label}, {name}: {detail}")


def test_target_without_record_from_elsewhere_fails(llama_tools, tiny_gguf, tmp_path):
    out = tmp_path / "lq.gguf"
    cmd = [str(llama_tools["llama-quantize"]), str(tiny_gguf("exaone4", "f32")), str(out), "Q2_K", "2"]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    bad = rewrite(out, tmp_path / "bad.gguf", kv={"general.file_type": 7, "quantize.target.bpw": (V.FLOAT32, 2.9)})
    status, detail = types_check(bad)
    assert status == "fail" and "records no plan" in detail, detail


@pytest.fixture(scope="module")
def target_files(tiny_dir, tiny_gguf, tmp_path_factory):
    """Honest --target-bpw and --target-size files of tiny exaone4 (the size: the Q4_K_M file's)."""
    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.model.imatrix import collect_imatrix
    from exaone_gguf.model.sensitivity import kld_probe
    from exaone_gguf.quantize.target import Target

    src, root = tiny_dir("exaone4"), tmp_path_factory.mktemp("target")
    imx = root / "imatrix.gguf"
    collect_imatrix(src, imx, ctx=128)
    f32 = tiny_gguf("exaone4", "f32")
    q4 = quantize_gguf(f32, root / "q4_k_m.gguf", "q4_k_m", imatrix=imx).output
    probe = kld_probe(load_checkpoint(src))
    made = {
        key: quantize_gguf(f32, root / f"{key}.gguf", "q4_k_m", imatrix=imx, target=target, probe=probe).output
        for key, target in (("bpw", Target(bpw=5.0)), ("size", Target(size=q4.stat().st_size)))
    }
    return src, imx, q4.stat().st_size, made


@pytest.mark.parametrize("kind", ["bpw", "size"])
def test_honest_target_files_pass(kind, target_files):
    from exaone_gguf.gguf_io.inspect import inspect_gguf

    src, imx, size, made = target_files
    path = made[kind]
    status, detail = types_check(path)
    assert status == "pass" and "size target's recorded plan" in detail, detail
    if kind == "size":
        print(f"--target-size {size}: file {path.stat().st_size} bytes ({path.stat().st_size / size:.4f})")
        assert path.stat().st_size <= size
    else:
        print(f"--target-bpw 5.0: {inspect_gguf(path)['totals']['bits_per_weight']:.4f} bits per weight")
    report = validate(path, src, imatrix=imx, max_tokens=64)
    assert report.passed, [(c.name, c.detail) for c in report.checks if c.status == "fail"]


@pytest.mark.parametrize("kind", ["bpw", "size"])
def test_target_claims_are_checked(kind, target_files, tmp_path):
    _, _, size, made = target_files
    good = made[kind]
    f = read_gguf(good)
    chosen = list(f.get("quantize.target.types"))
    f.close()
    lie = {"bpw": {"quantize.target.bpw": 8.0}, "size": {"quantize.target.size": size // 2}}[kind]
    # a claim the file fills only 0.84 of: below TARGET_FILL (0.87; honest plans measure 0.938 and more)
    real_bpw = 8 * sum(t.nbytes for t in f.tensors) / sum(t.n_elements for t in f.tensors)
    loose = {"bpw": {"quantize.target.bpw": real_bpw / 0.84}, "size": {"quantize.target.size": int(f.file_size / 0.84)}}
    other = int(T.Q2_K) if chosen[0] != int(T.Q2_K) else int(T.Q8_0)
    for kv, cause in [
        (lie, "claims a size target"),  # the claimed size against the real one
        (loose[kind], "below 0.87 of it"),
        ({"quantize.target.types": [other] + chosen[1:]}, "differ from"),  # a plan its tensors are not
        ({"quantize.target.types": DROP}, "records no plan"),
    ]:
        status, detail = types_check(rewrite(good, tmp_path / "bad.gguf", kv=kv))
        assert status == "fail" and cause in detail, (kv, detail)


# --- the real trained network (SmolLM2-135M-Instruct as ExaoneForCausalLM: ChatML, 576 wide) -------------------


@pytest.fixture(scope="module")
def real(smollm2, tmp_path_factory):
    """(source, get(outtype) -> our file of the EXAONE 3.x layout)."""
    src, root = smollm2("exaone3"), tmp_path_factory.mktemp("smollm2")
    cache: dict[str, Path] = {}

    def get(outtype: str) -> Path:
        if outtype not in cache:
            cache[outtype] = convert(src, root / f"{outtype}.gguf", ConvertOptions(outtype=outtype)).output
        return cache[outtype]

    return src, get


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m", "q2_k"])
def test_real_network_honest_files_pass_the_source_checks(outtype, real):
    """The structure and fidelity checks are other checks' business: these are the ones that read the source's
    tokenizer files and template and the file's record."""
    src, get = real
    got = checks(validate(get(outtype), src, max_tokens=32))
    for name in (*SOURCE_CHECKS, "tokenizer: matches source", "chat: completion stops on EOS"):
        assert got[name][0] == "pass", (name, got[name])
    assert "'<|im_end|>' ends a turn" in got[CHAT][1]


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m"])
@pytest.mark.parametrize("damage", ["eos", "template"])
def test_real_network_eos_or_template_changed_fails(damage, outtype, real, tmp_path):
    src, get = real
    kv = {"eos": {"tokenizer.ggml.eos_token_id": 0}, "template": {"tokenizer.chat_template": template_for("exaone3.5")}}
    got = checks(validate(rewrite(get(outtype), tmp_path / "bad.gguf", kv=kv[damage]), src, max_tokens=32))
    if damage == "eos":  # 0 is <|endoftext|>; the source's tokenizer_config.json and config.json say <|im_end|>, 2
        assert got[SPECIAL][0] == "fail" and "eos id 0, expected 2" in got[SPECIAL][1], got[SPECIAL]
    else:
        assert got["chat_template.matches_source"][0] == "fail", got["chat_template.matches_source"]


def test_real_network_types_with_controls_and_imatrix(real, llama_tools, tmp_path):
    """At 576 wide the K-quants fall back (Q4_K -> Q5_0, Q6_K -> Q8_0 ...): our plan is llama-quantize's, so
    honest files pass, with per-tensor controls (recorded) and with an imatrix (IQ4_XS keeps ffn_down at
    IQ4_XS, where the mixture without one gives Q5_K), llama-quantize's own IQ4_XS included."""
    from exaone_gguf.model.imatrix import collect_imatrix

    src, get = real
    for case in ("tensor-type", "pure", "token-embedding-type"):
        ov, _, ftype = OVERRIDES[case]
        out = convert(src, tmp_path / f"{case}.gguf", ConvertOptions(outtype=ftype, overrides=ov)).output
        assert types_check(out)[0] == "pass", (case, types_check(out))
    imx = tmp_path / "imatrix.gguf"
    collect_imatrix(src, imx, ctx=128)
    ours = convert(src, tmp_path / "iq4_xs.gguf", ConvertOptions(outtype="iq4_xs", imatrix=imx)).output
    theirs = tmp_path / "lq-iq4_xs.gguf"
    cmd = [str(llama_tools["llama-quantize"]), "--imatrix", str(imx), str(get("f32")), str(theirs), "IQ4_XS", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    for path in (ours, theirs):
        f = read_gguf(path)
        assert f.get("quantize.imatrix.file") is not None
        assert {t.name: t.tensor_type for t in f.tensors}["blk.0.ffn_down.weight"] == T.IQ4_XS
        f.close()
        assert types_check(path)[0] == "pass", (path.name, types_check(path))
    # without its imatrix keys the same llama-quantize file is not what IQ4_XS's mixture gives: a warning, named
    status, detail = types_check(
        rewrite(
            theirs,
            tmp_path / "no-keys.gguf",
            kv={k: DROP for k in read_gguf(theirs).metadata if k.startswith("quantize.imatrix.")},
        )
    )
    assert status == "warn" and "blk.0.ffn_down.weight IQ4_XS (expected Q5_K)" in detail, (status, detail)


def test_real_network_relabelled_file_fails(real, tmp_path):
    _, get = real
    for kv in ({"general.file_type": 7}, {"general.file_type": 7, "quantize.target.bpw": (V.FLOAT32, 8.5)}):
        status, detail = types_check(rewrite(get("q2_k"), tmp_path / "bad.gguf", kv=kv))
        assert status == "fail", (kv, detail)


def test_real_network_llamacpp_exaone3_file_names_the_missing_rms_epsilon(real, llama_tools, tmp_path):
    """llama.cpp's converter writes the EXAONE 3.x layout without exaone.attention.layer_norm_rms_epsilon (then
    llama.cpp refuses the file): validate names the key, with and without the source."""
    from test_llamacpp_files import RMS_EPS_MISSING, llama_convert

    src, _ = real
    lc = llama_convert(llama_tools, src, tmp_path / "lc.gguf", "f32", config_json=True)
    for reference in (src, None):
        report = validate(lc, reference, max_tokens=32)
        assert not report.passed
        assert any(c.status == "fail" and c.detail.startswith(RMS_EPS_MISSING) for c in report.checks)
