"""`inspect_gguf` totals and bits per weight on a file with known sizes, and its rendering."""

from __future__ import annotations

import io
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from rich.console import Console

from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.inspect import inspect_gguf, render_inspect


def _write(path: Path, tensors: dict[str, tuple[np.ndarray, Q]], kv: dict | None = None) -> None:
    w = gguf.GGUFWriter(str(path), "exaone")
    w.add_block_count(2)
    w.add_key_value("tokenizer.ggml.tokens", [f"토큰{i}" for i in range(10)], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("tokenizer.ggml.scores", [0.5] * 10, V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.nan", float("nan"), V.FLOAT32)
    w.add_key_value("test.flags", [True, False], V.ARRAY, sub_type=V.BOOL)
    w.add_string("tokenizer.chat_template", "{% for m in messages %}\n" * 20)
    w.add_string("tokenizer.eos_text", "[|endofturn|]")
    for k, (v, t) in (kv or {}).items():
        w.add_key_value(k, v, t)
    for name, (x, qt) in tensors.items():
        q = gguf.quants.quantize(x, qt)
        w.add_tensor(name, q, raw_dtype=None if qt in (Q.F32, Q.F16) else qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture()
def known_file(tmp_path: Path) -> Path:
    x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(4, 64)
    path = tmp_path / "known.gguf"
    _write(
        path, {"token_embd.weight": (x, Q.F32), "blk.0.attn_q.weight": (x, Q.F16), "blk.0.ffn_up.weight": (x, Q.Q8_0)}
    )
    return path


def test_totals_and_bits_per_weight(known_file: Path) -> None:
    s = inspect_gguf(known_file)
    text = json.dumps(s, allow_nan=False)  # strict JSON: no NaN, no numpy types
    assert json.loads(text) == s
    assert s["version"] == 3 and s["alignment"] == 32 and s["architecture"] == "exaone"
    assert s["file_size"] == known_file.stat().st_size
    tot = s["totals"]
    # 3 tensors of 64x4: F32 1024 B, F16 512 B, Q8_0 8 blocks x 34 B = 272 B
    assert tot["tensor_count"] == 3
    assert tot["parameter_count"] == 768
    assert tot["tensor_bytes"] == 1024 + 512 + 272
    assert tot["bits_per_weight"] == pytest.approx(1808 * 8 / 768, abs=1e-4)
    assert {k: v["bits_per_weight"] for k, v in tot["by_type"].items()} == {"F32": 32.0, "F16": 16.0, "Q8_0": 8.5}
    assert tot["by_type"]["Q8_0"] == {"count": 1, "parameters": 256, "bytes": 272, "bits_per_weight": 8.5}
    assert s["tensors"][2] == {
        "name": "blk.0.ffn_up.weight",
        "type": "Q8_0",
        "shape": [64, 4],
        "n_elements": 256,
        "nbytes": 272,
        "offset": s["tensors"][2]["offset"],
    }
    assert s["tensors"][0]["offset"] == s["data_offset"]

    md = s["metadata"]
    assert md["exaone.block_count"] == 2
    assert md["tokenizer.ggml.tokens"] == {
        "type": "array",
        "subtype": "string",
        "length": 10,
        "head": ["토큰0", "토큰1", "토큰2", "토큰3", "토큰4"],
    }
    assert md["tokenizer.ggml.scores"]["head"] == [0.5] * 5
    assert md["test.flags"]["head"] == [True, False]
    assert md["test.nan"] == "nan"
    assert s["metadata_types"]["tokenizer.ggml.tokens"] == "array[string]"
    assert s["metadata_types"]["exaone.block_count"] == "uint32"


def test_render_small_file(known_file: Path) -> None:
    buf = io.StringIO()
    render_inspect(inspect_gguf(known_file), Console(file=buf, width=160, color_system=None))
    out = buf.getvalue()
    for needle in (
        "blk.0.ffn_up.weight",
        "Q8_0",
        "8.500",
        "18.833",
        "exaone.block_count",
        "(10 items)",
        "Totals",
        "array[string]",
        "'[|endofturn|]'",
        "토큰0",
    ):
        assert needle in out, needle
    assert "\\n" in out  # the multi-line chat template is shown on one line


def test_render_groups_many_tensors(tmp_path: Path) -> None:
    x = np.ones((2, 32), dtype=np.float32)
    tensors = {"token_embd.weight": (x, Q.F32)}
    for i in range(30):
        for part in ("attn_q", "attn_k", "ffn_up"):
            tensors[f"blk.{i}.{part}.weight"] = (x, Q.Q8_0 if part == "ffn_up" else Q.F16)
    path = tmp_path / "many.gguf"
    _write(path, tensors)
    s = inspect_gguf(path)
    assert s["totals"]["tensor_count"] == 91
    buf = io.StringIO()
    render_inspect(s, Console(file=buf, width=160, color_system=None))
    out = buf.getvalue()
    assert "grouped by layer pattern" in out
    assert "blk.*.ffn_up.weight" in out and "30 (0-29)" in out
    assert "blk.17.attn_q.weight" not in out
    assert len(out.splitlines()) < 80


def test_inspect_rejects_a_bad_file(tmp_path: Path, known_file: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(known_file.read_bytes()[:-300])
    with pytest.raises(InputError, match="bad.gguf: tensor .* runs past the end of the file"):
        inspect_gguf(bad)


def test_split_shown(tmp_path: Path) -> None:
    path = tmp_path / "shard-00002-of-00003.gguf"
    _write(
        path,
        {"a": (np.ones((1, 32), np.float32), Q.F32)},
        kv={"split.no": (1, V.UINT16), "split.count": (3, V.UINT16), "split.tensors.count": (5, V.INT32)},
    )
    s = inspect_gguf(path)
    assert s["split"] == {"no": 1, "count": 3, "tensors_count": 5}
    buf = io.StringIO()
    render_inspect(s, Console(file=buf, width=160, color_system=None))
    assert "shard 2 of 3" in buf.getvalue()
