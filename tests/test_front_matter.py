"""Model-card front matter is YAML: list-valued keys in flow or block style reach general.* as lists."""

from __future__ import annotations

import shutil

import pytest
from helpers import run_cli

from exaone_gguf.checkpoint import read_front_matter
from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.gguf_io import read_gguf

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models

_BODY = "\n# A model\n\nText with --- in it.\n"
FRONT = {
    "flow": "---\nlicense: other\nlicense_name: exaone\nlanguage: [en, ko]\ntags: [exaone, 'lg-ai']\n"
    "base_model: [LGAI-EXAONE/EXAONE-4.0-1.2B]\n---\n",
    "block": '---\nlicense: other\nlicense_name: exaone\nlanguage:\n  - en\n  - ko\ntags:\n- exaone\n- "lg-ai"\n'
    "base_model:\n- LGAI-EXAONE/EXAONE-4.0-1.2B\n---\n",
}


@pytest.mark.parametrize("style", sorted(FRONT))
def test_list_values_parse_as_lists(tmp_path, style):
    (tmp_path / "README.md").write_text(FRONT[style] + _BODY)
    card = read_front_matter(tmp_path / "README.md")
    assert card["language"] == ["en", "ko"]
    assert card["tags"] == ["exaone", "lg-ai"]
    assert card["base_model"] == ["LGAI-EXAONE/EXAONE-4.0-1.2B"]
    assert card["license_name"] == "exaone"


def test_yaml_rules_apply(tmp_path):
    # comments, quoting, Norwegian ("no" is a language code, not YAML 1.1's False), CRLF line ends
    text = "---\r\nlanguage: [en, \"ko\", no]  # three\r\nlicense: 'apache-2.0'\r\n---\r\nbody\r\n"
    (tmp_path / "README.md").write_text(text, newline="")
    assert read_front_matter(tmp_path / "README.md") == {"language": ["en", "ko", "no"], "license": "apache-2.0"}


@pytest.mark.parametrize("style", sorted(FRONT))
def test_languages_reach_the_gguf_as_a_list(tiny_dir, tmp_path, style):
    src = tmp_path / "src"
    shutil.copytree(tiny_dir("exaone4"), src)
    (src / "README.md").write_text(FRONT[style] + _BODY)
    out = tmp_path / "m.gguf"
    convert(src, out, ConvertOptions(outtype="f32"))
    md = read_gguf(out).metadata
    assert list(md["general.languages"]) == ["en", "ko"]  # main wrote the one string "[en, ko]" for flow style
    assert list(md["general.tags"]) == ["exaone", "lg-ai"]
    assert md["general.license"] == "other" and md["general.license.name"] == "exaone"
    assert md["general.base_model.count"] == 1
    assert md["general.base_model.0.organization"] == "LGAI-EXAONE"
    assert md["general.base_model.0.name"] == "EXAONE-4.0-1.2B"


@pytest.mark.parametrize(
    ("front", "words"),
    [
        ("---\nlanguage: [en, ko\nlicense: other\n---\n", ["cannot be parsed", "line 3"]),
        ("---\n- en\n- ko\n---\n", ["is a list, not a mapping"]),
    ],
    ids=["unclosed-list", "not-a-mapping"],
)
def test_broken_front_matter_is_refused_with_exit_2(tiny_dir, tmp_path, front, words):
    src = tmp_path / "src"
    shutil.copytree(tiny_dir("exaone4"), src)
    (src / "README.md").write_text(front + _BODY)
    out = tmp_path / "m.gguf"
    res = run_cli("convert", src, "-o", out)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "README.md" in res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)
    assert not out.exists() and not list(tmp_path.glob("m.gguf*"))
