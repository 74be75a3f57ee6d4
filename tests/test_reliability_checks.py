"""Issue 5: the checks added for untrusted checkpoints, one by one (the CLI corpus is test_reliability_corpus.py).

- NaN / infinity detection by bit pattern for every float dtype, and --allow-nonfinite converting anyway
  with a warning;
- the converter's chat-template gate accepts every real template we know of (it must not refuse good models)
  and refuses escape attempts wherever they hide.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from broken_inputs import link_copy, make_base, poke_value
from conftest import fixture_path
from helpers import run_cli, template_for

from exaone_gguf.chat_template import TemplateError
from exaone_gguf.checkpoint.finite import all_finite
from exaone_gguf.convert.vocab import check_chat_template

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models

ROOT = Path(__file__).resolve().parents[1]

# (dtype, storage numpy type, non-finite bit patterns, largest finite patterns)
PATTERNS = [
    ("BF16", np.uint16, [0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF], [0x7F7F, 0xFF7F, 0x0001, 0x8000]),
    ("F16", np.uint16, [0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF], [0x7BFF, 0xFBFF, 0x0001, 0x8000]),
    ("F32", np.uint32, [0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001], [0x7F7FFFFF, 0xFF7FFFFF, 0x80000000]),
    ("F64", np.uint64, [0x7FF0000000000000, 0xFFF8000000000000], [0x7FEFFFFFFFFFFFFF, 0x8000000000000000]),
    ("F8_E4M3", np.uint8, [0x7F, 0xFF], [0x7E, 0xFE, 0x01, 0x80]),  # e4m3fn: NaN only, no infinity
    ("F8_E5M2", np.uint8, [0x7C, 0xFC, 0x7E, 0xFF], [0x7B, 0xFB, 0x01, 0x80]),
]


@pytest.mark.parametrize("dtype,utype,bad,good", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_all_finite_by_bit_pattern(dtype, utype, bad, good) -> None:
    base = np.array(good * 1000, dtype=utype)
    assert all_finite(base, dtype)
    for pattern in bad:
        for pos in (0, len(base) // 2, len(base) - 1):
            x = base.copy()
            x[pos] = pattern
            assert not all_finite(x, dtype), (dtype, hex(pattern), pos)
    assert all_finite(np.array([1, 2**31 - 1], np.int32), "I32")  # integers cannot be NaN


def test_all_finite_spans_chunks() -> None:
    from exaone_gguf.checkpoint import finite

    x = np.zeros(finite.CHUNK_ELEMENTS * 2 + 5, np.uint16)
    assert all_finite(x, "BF16")
    x[-1] = 0x7FC0  # in the last, partial chunk
    assert not all_finite(x, "BF16")


def test_allow_nonfinite_converts_with_a_warning(tmp_path: Path) -> None:
    ckpt, _ = make_base(tmp_path)
    src = link_copy(ckpt, tmp_path / "src")
    poke_value(src, "model.layers.0.mlp.gate_proj.weight", 9, 0x7FC0)
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "nan.gguf"
    args = ["convert", src, "-o", out, "--json"]
    refused = run_cli(*args, env=env)
    assert refused.returncode == 2 and "contains NaN or infinity" in refused.stderr and not out.exists()
    allowed = run_cli(*args, "--allow-nonfinite", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert "warning:" in allowed.stderr and "model.layers.0.mlp.gate_proj.weight" in allowed.stderr
    assert json.loads(allowed.stdout)["nonfinite"] == ["model.layers.0.mlp.gate_proj.weight"]
    from exaone_gguf.gguf_io import read_gguf

    assert np.isnan(read_gguf(out).tensor_f32("blk.0.ffn_gate.weight")).sum() == 1  # carried over as it is


def test_allow_nonfinite_quantizes_with_a_warning(tmp_path: Path) -> None:
    from exaone_gguf.gguf_io import read_gguf

    _, base = make_base(tmp_path)
    t = next(t for t in read_gguf(base).tensors if t.name == "blk.0.ffn_up.weight")
    data = bytearray(base.read_bytes())
    data[t.offset + 18 : t.offset + 20] = (0x7F80).to_bytes(2, "little")  # BF16 +inf, element 9
    src = tmp_path / "inf.gguf"
    src.write_bytes(bytes(data))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "q.gguf"
    args = ["quantize", src, out, "q8_0", "--json"]
    refused = run_cli(*args, env=env)
    assert refused.returncode == 2 and "blk.0.ffn_up.weight' contains NaN or infinity" in refused.stderr
    assert not out.exists()
    allowed = run_cli(*args, "--allow-nonfinite", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert "warning:" in allowed.stderr and "quantized anyway" in allowed.stderr
    assert json.loads(allowed.stdout)["nonfinite"] == ["blk.0.ffn_up.weight"]
    assert not np.isfinite(read_gguf(out).tensor_f32("blk.0.ffn_up.weight")).all()


@pytest.mark.parametrize("family", ["exaone3", "exaone3.5", "exaone4", "exaone4-hybrid", "exaone-deep"])
def test_template_gate_accepts_shipped_templates(family: str) -> None:
    check_chat_template(template_for(family), f"<{family}>")


@pytest.mark.parametrize(
    "rel",
    [
        "exaone-3.5/chat_template.jinja",
        "exaone-4.0-1.2B/chat_template.jinja",
        "exaone-deep/chat_template.llamacpp.jinja",
    ],
)
def test_template_gate_accepts_real_templates(rel: str) -> None:
    path = fixture_path(*rel.split("/"))
    check_chat_template(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{% if false %}{{ x.__init__.__globals__ }}{% endif %}ok",
        "{% macro m() %}{{ y._private }}{% endmacro %}ok",
        "{{ messages|map(attribute='__class__')|list }}",
        "{% set a = namespace() %}{{ a['__dict__'] }}",
        "{{ (messages|attr('_' ~ '_class__')).mro() }}",  # built at render time: the sandbox stops it
    ],
)
def test_template_gate_refuses_escapes(template: str, tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="sandbox"):
        check_chat_template(template, "chat_template.jinja")


_FORKS = [0]
os.register_at_fork(after_in_parent=lambda: _FORKS.__setitem__(0, _FORKS[0] + 1))


@pytest.mark.parametrize(
    "template, error",
    [
        ("{{ messages[0]['content'] }}", None),
        ("ok\n{% if %}", "chat_template.jinja: chat template "),  # a syntax error: refused while compiling
        ("{% if false %}{{ x.__init__ }}{% endif %}{{ raise_exception('rendered') }}", "private attribute '__init__'"),
        ("{{ raise_exception('no user turn') }}", "no user turn"),  # compiles, fails while rendering
    ],
)
def test_template_gate_is_one_child(template: str, error: str | None) -> None:
    """Compile, the private-name refusal and the one-message render happen in a single bounded child, and a
    template naming a private attribute is refused before it renders (its raise_exception never runs)."""
    before = _FORKS[0]
    if error is None:
        check_chat_template(template, "chat_template.jinja")
    else:
        with pytest.raises(TemplateError, match=re.escape(error)) as e:
            check_chat_template(template, "chat_template.jinja")
        assert "rendered" not in str(e.value)
    assert _FORKS[0] - before == 1


def test_force_over_a_hard_link_to_the_source_leaves_the_source_intact(tmp_path: Path) -> None:
    """--force replaces the output's directory entry (write .partial, rename), never writes through it: an
    output that is a hard link to the source weights gets a new inode, the source keeps its bytes."""
    from broken_inputs import tree_digest

    ckpt, _ = make_base(tmp_path)
    src = link_copy(ckpt, tmp_path / "src")
    out = tmp_path / "model.gguf"
    os.link(src / "model.safetensors", out)
    before = tree_digest(src)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    r = run_cli("convert", src, "-o", out, "--force", env=env)
    assert r.returncode == 0, r.stderr
    assert tree_digest(src) == before
    assert not os.path.samefile(out, src / "model.safetensors")
    assert out.read_bytes()[:4] == b"GGUF"
