"""Config keys: each family declares the keys it reads and those that are harmless (families/base.py
check_config_keys). A key that changes the computation and that the family does not model is refused with exit 2
and one sentence naming it, nothing written; a key no family knows converts with a warning naming it; every real
config.json in ../shared/fixtures passes, with the warnings listed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, fixture_path
from helpers import run_cli

from exaone_gguf.checkpoint.spec import read_config
from exaone_gguf.errors import InputError
from exaone_gguf.families import check_config_keys, parse_config
from exaone_gguf.tiny import make_tiny

pytestmark = pytest.mark.slow  # torch / transformers

# every config.json under ../shared/fixtures -> the unknown keys its check reports (a warning; no refusal)
FIXTURE_WARNINGS: dict[str, list[str]] = {
    "exaone-3.0-7.8B-instruct/config.json": [],
    "exaone-3.0-7.8B-instruct-awq/config.json": [],
    "exaone-3.5-2.4B-instruct-awq/config.json": [],
    "exaone-3.5-2.4B-instruct-mlx-4bit/config.json": [],
    "exaone-3.5-32B-instruct-abliterated/config.json": [],
    "exaone-3.5-32B-instruct-awq/config.json": [],
    "exaone-4.0-1.2B/config.json": [],
    "exaone-4.0-1.2B-w4a16-compressed-tensors/config.json": [],
    "exaone-4.5-33b/config.json": [],
    "exaone-deep-32B-mlx-4bit/config.json": [],  # its ln_no_scale is false: off, so neither refused nor unknown
    "k-exaone-236b-a23b/config.json": [],
    "k-exaone-236b-a23b/config.transformers-5.1.json": [],
}


def test_the_list_covers_every_fixture_config():
    found = {str(p.relative_to(FIXTURES)) for p in fixture_path().glob("*/config*.json")}
    assert found == set(FIXTURE_WARNINGS)


@pytest.mark.parametrize("name", sorted(FIXTURE_WARNINGS))
def test_real_configs_pass_with_their_warnings(name):
    path = fixture_path(name)
    assert check_config_keys(read_config(path), path) == FIXTURE_WARNINGS[name]


def edited(src: Path, dst: Path, **keys) -> Path:
    """A copy of checkpoint `src` (links to its files) whose config.json has `keys` added or replaced."""
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).symlink_to(p)
    (dst / "config.json").unlink()
    cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, **keys}))
    return dst


@pytest.fixture(scope="module")
def k_exaone(tmp_path_factory) -> Path:
    return make_tiny("k-exaone", tmp_path_factory.mktemp("cfg") / "k-exaone")


def test_k_exaone_2_config_is_refused(k_exaone, tmp_path):
    """K-EXAONE 2.0's per-layer clamps and windows (issue 23's config): exit 2, one sentence, nothing written."""
    src = edited(k_exaone, tmp_path / "k2", swiglu_limits=[0, 0, 0, 7.0, 7.0], sliding_windows=[6, 6, 6, 6, 4096])
    out = tmp_path / "out.gguf"
    r = run_cli("convert", str(src), "-o", str(out))
    assert r.returncode == 2, r.stderr
    msg = " ".join(r.stderr.split())
    assert msg.startswith("error:") and msg.count(". ") == 0 and msg.endswith("cannot be converted."), msg
    assert "'swiglu_limits' = [0, 0, 0, 7.0, 7.0] (a clamp of the SwiGLU inputs per layer)" in msg
    assert "'sliding_windows'" in msg and "`exaone-moe` graph" in msg
    assert not out.exists() and list(tmp_path.glob("out*")) == []


def test_a_new_key_converts_with_a_warning(k_exaone, tmp_path):
    src = edited(k_exaone, tmp_path / "new", attention_sink_tokens=0.5)
    r = run_cli("convert", str(src), "-o", str(tmp_path / "out.gguf"), "--outtype", "q8_0")
    assert r.returncode == 0, r.stderr
    msg = " ".join(r.stderr.split())
    assert "warning: " in msg and "unknown config key(s) attention_sink_tokens, converted as if absent" in msg
    plain = run_cli("convert", str(k_exaone), "-o", str(tmp_path / "plain.gguf"), "--outtype", "q8_0")
    assert plain.returncode == 0 and "warning" not in plain.stderr


def test_python_api_warns_without_a_callback(k_exaone, tmp_path):
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.options import ConvertOptions

    src = edited(k_exaone, tmp_path / "new", brand_new_key=1)
    with pytest.warns(UserWarning, match="brand_new_key"):
        convert(src, tmp_path / "out.gguf", ConvertOptions(outtype="q8_0"))
    seen = []
    convert(src, tmp_path / "out2.gguf", ConvertOptions(outtype="q8_0", on_warning=seen.append))
    assert len(seen) == 1 and "brand_new_key" in seen[0]


def _cfg(name: str) -> dict:
    return read_config(fixture_path(name))


@pytest.mark.parametrize(
    "name, keys, named",
    [
        ("k-exaone-236b-a23b/config.json", {"swiglu_limits": [0] * 47 + [7.0]}, "swiglu_limits"),
        ("exaone-4.0-1.2B/config.json", {"attention_bias": True}, "attention_bias"),
        ("exaone-4.0-1.2B/config.json", {"num_experts": 8}, "num_experts"),  # another family's key
        ("exaone-3.0-7.8B-instruct/config.json", {"sliding_window": 4096}, "sliding_window"),
        ("exaone-3.5-32B-instruct-awq/config.json", {"rotary_pct": 0.25}, "rotary_pct"),
        ("exaone-deep-32B-mlx-4bit/config.json", {"ln_no_scale": True}, "ln_no_scale"),
    ],
)
def test_computation_keys_are_refused(name, keys, named):
    with pytest.raises(InputError) as e:
        check_config_keys({**_cfg(name), **keys}, name)
    assert f"'{named}' = " in str(e.value) and str(e.value).count(" = ") == 1, str(e.value)


def test_keys_set_off_pass_and_the_nested_text_config_is_checked():
    """Zero limits clamp nothing; a 4.5 key refused inside text_config says so."""
    assert check_config_keys({**_cfg("k-exaone-236b-a23b/config.json"), "swiglu_limits": [0] * 48}, "c") == []
    cfg = _cfg("exaone-4.5-33b/config.json")
    cfg["text_config"] = {**cfg["text_config"], "swiglu_limits": [7.0] * 64}
    with pytest.raises(InputError, match=r"'swiglu_limits' in text_config = \[7.0"):
        check_config_keys(cfg, "c")


def test_unknown_layer_type_and_rope_type_are_refused():
    cfg = _cfg("exaone-4.0-1.2B/config.json")  # no sliding window: layer_types is still read
    bad = {**cfg, "layer_types": ["full_attention"] * 29 + ["linear_attention"]}
    with pytest.raises(InputError, match="'layer_types' lists a layer of type 'linear_attention'"):
        parse_config(bad, "config.json")
    with pytest.raises(InputError, match="rope_scaling type 'yarn' is not supported"):
        parse_config({**cfg, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "config.json")


def test_k_exaone_topk_method_other_than_noaux_tc_is_refused():
    cfg = _cfg("k-exaone-236b-a23b/config.json")
    with pytest.raises(InputError, match="topk_method 'greedy' is not supported"):
        parse_config({**cfg, "topk_method": "greedy"}, "config.json")


def test_rope_theta_inside_rope_parameters_is_read():
    """transformers 5 saves rope_theta inside rope_parameters only; reading the top level alone gave 10000."""
    cfg = _cfg("exaone-4.0-1.2B/config.json")
    theta, scaling = cfg.pop("rope_theta"), cfg.pop("rope_scaling")
    spec = parse_config({**cfg, "rope_parameters": {**scaling, "rope_theta": theta}}, "config.json")
    assert theta == 1000000 and spec.rope_theta == theta and spec.rope_scaling.factor == scaling["factor"]
    assert parse_config({**cfg, "rope_parameters": {"rope_type": "default"}}, "c").rope_theta == 10000.0


def test_transformers_config_classes_declare_every_key():
    """Every key transformers' EXAONE 4, 4.5 and K-EXAONE config classes write is read or harmless."""
    import transformers

    for cls, arch in (
        ("Exaone4Config", "Exaone4ForCausalLM"),
        ("ExaoneMoeConfig", "ExaoneMoeForCausalLM"),
        ("Exaone4_5_Config", "Exaone4_5_ForConditionalGeneration"),
    ):
        cfg = getattr(transformers, cls)().to_dict()
        assert check_config_keys({**cfg, "architectures": [arch]}, cls) == [], cls


@pytest.mark.parametrize("layout", ["exaone3", "llama"])
def test_the_trained_network_configs_pass(smollm2, layout):
    path = smollm2(layout) / "config.json"
    assert check_config_keys(read_config(path), path) == []
