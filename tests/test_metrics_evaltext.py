"""The built-in evaluation text and load_text."""

from __future__ import annotations

import re

import pytest

from exaone_gguf.errors import InputError
from exaone_gguf.model.texts import EVAL_TEXT, load_text


def test_builtin_text_is_bilingual_with_code_and_digits():
    assert 1500 <= len(EVAL_TEXT) <= 3000
    hangul = len(re.findall(r"[\uac00-\ud7a3]", EVAL_TEXT))
    latin = len(re.findall(r"[A-Za-z]", EVAL_TEXT))
    assert hangul > 300 and latin > 600
    assert "def " in EVAL_TEXT and "    return" in EVAL_TEXT  # code with indentation
    assert len(re.findall(r"\d", EVAL_TEXT)) > 40
    assert load_text(None) == EVAL_TEXT


def test_load_text_reads_utf8_and_rejects_bad_files(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("안녕하세요. Hello.", encoding="utf-8")
    assert load_text(good) == "안녕하세요. Hello."
    latin1 = tmp_path / "l.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    empty = tmp_path / "e.txt"
    empty.write_text("  \n")
    for bad in (tmp_path / "missing.txt", tmp_path, latin1, empty):
        with pytest.raises(InputError):
            load_text(bad)
