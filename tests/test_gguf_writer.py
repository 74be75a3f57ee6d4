"""gguf_io.writer.write_outputs, the one write path of single files, shards and releases: the same bytes with
and without hashing, the kernel copy of source spans only when not hashing, digests equal to the files', and
nothing left behind when a producer fails after other outputs are complete."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.gguf_io.split import split_output
from exaone_gguf.gguf_io.writer import FileSpan, GGUFPlan, Output, write_outputs, write_plan


def _plan(src: Path, fail_at: str | None = None) -> GGUFPlan:
    """Four tensors: two copied from `src` as spans, two computed; `fail_at` names one whose producer raises."""
    plan = GGUFPlan()
    plan.add_string("general.architecture", "llama")

    def produce(name: str, chunks):
        def gen():
            for c in chunks:
                if name == fail_at:
                    raise RuntimeError(f"producer of {name} failed")
                yield c

        return gen

    rng = np.random.default_rng(0)
    plan.add_tensor("a", (256,), T.F32, produce("a", [FileSpan(src, 0, 512), FileSpan(src, 512, 512)]))
    plan.add_tensor("b", (64, 3), T.F32, produce("b", [rng.standard_normal((3, 64), dtype=np.float32)]))
    plan.add_tensor("c", (100,), T.F32, produce("c", [FileSpan(src, 1000, 400)]))
    plan.add_tensor("d", (8,), T.F32, produce("d", [np.arange(8, dtype=np.float32).tobytes()]))
    return plan


@pytest.fixture
def src(tmp_path: Path) -> Path:
    p = tmp_path / "src.bin"
    p.write_bytes(np.random.default_rng(1).standard_normal(1024, dtype=np.float32).tobytes())
    return p


def _fill(plans):
    def fill(sinks):
        for sink, plan in zip(sinks, plans):
            write_plan(sink, plan)

    return fill


@pytest.fixture
def kernel_copies(monkeypatch) -> list[int]:
    """Counts os.copy_file_range calls (the real call still does the copy)."""
    calls: list[int] = []
    real = os.copy_file_range

    def counted(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", counted)
    return calls


def test_hashing_changes_no_byte_and_only_hashing_reads_the_spans(src, tmp_path, kernel_copies):
    outs = {}
    for hashed in (False, True):
        d = tmp_path / ("hashed" if hashed else "plain")
        d.mkdir()
        plans = [_plan(src), _plan(src)]
        outputs = [Output([plans[0]], [d / "one.gguf"]), split_output(plans[1], d / "two.gguf", max_tensors=2)]
        kernel_copies.clear()
        sizes = write_outputs(outputs, _fill(plans), hash=hashed)
        files = [p for o in outputs for p in o.paths]
        assert [p.name for p in files] == ["one.gguf", "two-00001-of-00002.gguf", "two-00002-of-00002.gguf"]
        assert sizes == [sum(p.stat().st_size for p in o.paths) for o in outputs]
        if hashed:
            assert kernel_copies == []  # the digest must see every byte: spans are read, not kernel-copied
            assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == {
                **outputs[0].sha256,
                **outputs[1].sha256,
            }
        else:
            assert sum(kernel_copies) == 2 * (512 + 512 + 400)  # every span byte of both outputs, in the kernel
            assert outputs[0].sha256 == {} and outputs[1].sha256 == {}
        outs[hashed] = [p.read_bytes() for p in files]
        assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in files)  # no .partial left
    assert outs[False] == outs[True]
    with read_gguf(tmp_path / "plain" / "one.gguf") as f:
        assert f.tensor_bytes("c").tobytes() == src.read_bytes()[1000:1400]


@pytest.mark.parametrize("fail_at", ["a", "d"])
@pytest.mark.parametrize("hashed", [False, True], ids=["single-convert", "release"])
def test_a_failing_producer_leaves_nothing(src, tmp_path, fail_at, hashed):
    """The second output fails (at its first or last tensor) after the first output was written in full:
    every file and partial of both outputs goes."""
    good, bad = _plan(src), _plan(src, fail_at=fail_at)
    outputs = [Output([good], [tmp_path / "good.gguf"]), split_output(bad, tmp_path / "bad.gguf", max_tensors=2)]
    with pytest.raises(RuntimeError, match=f"producer of {fail_at} failed"):
        write_outputs(outputs, _fill([good, bad]), hash=hashed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]


def test_a_short_producer_is_refused(src, tmp_path):
    plan = GGUFPlan()
    plan.add_tensor("t", (16,), T.F32, lambda: [np.zeros(15, np.float32)])
    with pytest.raises(RuntimeError, match="produced 60 bytes, expected 64"):
        write_outputs([Output([plan], [tmp_path / "t.gguf"])], _fill([plan]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]
