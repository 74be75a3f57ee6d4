"""scripts/bench_publish.py's check against llama.cpp's files: same weight tensors (names, types, data bytes)
is found equal for the same file and unequal for a changed byte, a changed type and a missing tensor."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_publish.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_publish", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_same_tensors_catches_every_difference(tiny_gguf, tmp_path):
    from exaone_gguf.gguf_io.reader import read_gguf

    bench = load_bench()
    q8 = tiny_gguf("exaone4", "q8_0")
    assert bench.same_tensors(q8, q8) == (None, [])
    changed = tmp_path / "changed.gguf"
    shutil.copyfile(q8, changed)
    with read_gguf(q8) as f:
        t = f.tensor("blk.0.ffn_down.weight")
    with open(changed, "r+b") as fh:  # flip one byte inside the tensor's data
        fh.seek(t.offset + t.nbytes // 2)
        b = fh.read(1)
        fh.seek(t.offset + t.nbytes // 2)
        fh.write(bytes([b[0] ^ 0x01]))
    assert bench.same_tensors(q8, changed)[0] == "blk.0.ffn_down.weight: data bytes differ"
    diff, _ = bench.same_tensors(q8, tiny_gguf("exaone4", "q4_0"))
    assert diff is not None and " type Q8_0 vs " in diff
    diff, _ = bench.same_tensors(q8, tiny_gguf("exaone3.5", "q8_0"))  # another model: other tensors
    assert diff is not None
