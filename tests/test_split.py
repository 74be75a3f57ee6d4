"""Split output: gguf-split's layout and naming, loading in llama.cpp by the first shard, and the readers."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import llama_cpp_logits
from gguf import GGUFValueType as V

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.gguf_io.inspect import inspect_gguf
from exaone_gguf.gguf_io.split import (
    SplitGGUF,
    open_model,
    parse_shard_name,
    parse_split_size,
    shard_groups,
    shard_path,
)

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

TOKENS = [1, 1002, 2003, 3004, 4005, 5006, 6007, 7008, 8009, 361]


def test_sizes_are_decimal_like_gguf_split():
    assert parse_split_size("5G") == 5_000_000_000
    assert parse_split_size("500M") == 500_000_000
    assert parse_split_size("64k") == 64_000
    assert parse_split_size("12345") == 12345
    for bad in ("5T", "0", "-1G", "G", "1.5G", ""):
        with pytest.raises(InputError, match="--split-max-size"):
            parse_split_size(bad)


def test_names_follow_llama_split_path():
    assert shard_path("out/m", 0, 3) == Path("out/m-00001-of-00003.gguf")
    assert parse_shard_name("out/m-00002-of-00003.gguf") == (Path("out/m"), 1, 3)
    assert parse_shard_name("out/m.gguf") is None


def test_grouping_rule():
    # a new shard starts when the padded bytes so far plus the next tensor exceed the limit
    assert shard_groups([64, 32, 64, 128, 32], max_bytes=128) == [[0, 1], [2], [3], [4]]
    assert shard_groups([40, 40, 10], max_bytes=128) == [[0, 1], [2]]  # sizes count padded to 32: 64 + 64 + 32
    assert shard_groups([500, 10], max_bytes=100) == [[0], [1]]  # a tensor over the limit gets a shard of its own
    assert shard_groups([10] * 7, max_tensors=3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert shard_groups([10] * 7) == [list(range(7))]


@pytest.fixture(scope="module")
def split_and_whole(tiny_dir, tmp_path_factory):

    src = tiny_dir("exaone4")
    d = tmp_path_factory.mktemp("split")
    whole = d / "whole.gguf"
    convert(src, whole, ConvertOptions(outtype="q8_0"))
    result = convert(src, d / "m.gguf", ConvertOptions(outtype="q8_0", split_max_size="10M"))
    shards = result.files
    return src, whole, shards, result


def test_layout_matches_gguf_split(split_and_whole):
    _, whole, shards, result = split_and_whole
    assert [p.name for p in shards] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert result.output == shards[0]
    with read_gguf(whole) as w:
        files = [read_gguf(p) for p in shards]
        first = files[0]
        # shard 1: every key of the whole file, then split.no (u16), split.count (u16), split.tensors.count (i32)
        assert list(first.metadata)[: len(w.metadata)] == list(w.metadata)
        assert list(first.metadata)[len(w.metadata) :] == ["split.no", "split.count", "split.tensors.count"]
        assert [first.types[k][0] for k in ("split.no", "split.count", "split.tensors.count")] == [
            V.UINT16,
            V.UINT16,
            V.INT32,
        ]
        for no, f in enumerate(files):
            assert (f.get("split.no"), f.get("split.count"), f.get("split.tensors.count")) == (no, 3, len(w.tensors))
            if no:
                assert list(f.metadata) == ["split.no", "split.count", "split.tensors.count"]
        # same tensors, same order, same bytes
        got = [(t.name, f.tensor_bytes(t).tobytes()) for f in files for t in f.tensors]
        assert got == [(t.name, w.tensor_bytes(t).tobytes()) for t in w.tensors]
        # each shard holds at most 10 MB of tensor data unless one tensor is bigger on its own
        for f in files:
            data = sum(-(-t.nbytes // 32) * 32 for t in f.tensors)
            assert data <= 10_000_000 or len(f.tensors) == 1
        for f in files:
            f.close()


def test_llama_cpp_loads_first_shard_same_logits(split_and_whole):
    _, whole, shards, _ = split_and_whole
    a = llama_cpp_logits(shards[0], TOKENS)
    b = llama_cpp_logits(whole, TOKENS)
    assert a.shape == (len(TOKENS), 102400)
    assert np.array_equal(a, b)


def test_inspect_and_validate_accept_split(split_and_whole):
    from exaone_gguf.validate import validate

    src, whole, shards, _ = split_and_whole
    s, w = inspect_gguf(shards[0]), inspect_gguf(whole)
    assert s["split"]["count"] == 3 and s["split"]["files"] == [str(p) for p in shards]
    assert s["totals"]["kv_count"] == w["totals"]["kv_count"] + 3  # split.no, split.count, split.tensors.count
    s["totals"].pop("kv_count"), w["totals"].pop("kv_count")
    assert s["totals"] == w["totals"] and [t["name"] for t in s["tensors"]] == [t["name"] for t in w["tensors"]]
    report = validate(shards[0], src, max_tokens=32)
    assert report.passed, [c for c in report.checks if c.status == "fail"]


def test_split_max_tensors(tiny_dir, tmp_path):
    src = tiny_dir("exaone4")
    shards = convert(src, tmp_path / "t.gguf", ConvertOptions(outtype="q8_0", split_max_tensors=20)).files
    with open_model(shards[0]) as f:
        assert isinstance(f, SplitGGUF) and len(f.shards) == -(-len(f.tensors) // 20)
        assert [len(s.tensors) for s in f.shards][:-1] == [20] * (len(f.shards) - 1)
    one = convert(src, tmp_path / "one.gguf", ConvertOptions(outtype="q8_0", split_max_size="5G")).files
    assert one == [tmp_path / "one.gguf"] and read_gguf(one[0]).split is None  # fits: a plain file, as gguf-py


def _copy_shards(shards: list[Path], d: Path) -> list[Path]:
    d.mkdir()
    return [Path(shutil.copy(p, d / p.name)) for p in shards]


def test_broken_splits_are_refused(split_and_whole, tmp_path):
    _, _, shards, _ = split_and_whole
    missing = _copy_shards(shards, tmp_path / "missing")
    missing[2].unlink()
    with pytest.raises(InputError, match="shard 3 of 3 .* is missing"):
        open_model(missing[0])

    swapped = _copy_shards(shards, tmp_path / "swapped")  # shard 3's bytes under shard 2's name
    data2, data3 = swapped[1].read_bytes(), swapped[2].read_bytes()
    swapped[1].write_bytes(data3)
    swapped[2].write_bytes(data2)
    with pytest.raises(InputError, match="do not belong together"):
        open_model(swapped[0])

    renamed = tmp_path / "renamed.gguf"  # shard 1 under a name that does not lead to the others
    shutil.copy(shards[0], renamed)
    with pytest.raises(InputError, match="cannot be found"):
        open_model(renamed)

    count = _copy_shards(shards, tmp_path / "count")  # split.tensors.count says one more tensor than there are
    raw = bytearray(count[0].read_bytes())
    key = b"split.tensors.count"
    at = raw.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4
    n = struct.unpack_from("<i", raw, at)[0]
    struct.pack_into("<i", raw, at, n + 1)
    count[0].write_bytes(bytes(raw))
    with pytest.raises(InputError, match="split.tensors.count"):
        open_model(count[0])


def test_cli_split(tiny_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from exaone_gguf.cli import app

    src = tiny_dir("exaone4")
    res = CliRunner().invoke(
        app,
        ["convert", str(src), "--outtype", "q8_0", "-o", str(tmp_path / "c.gguf"), "--split-max-size", "10M", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"c-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "c-00001-of-00003.gguf"), "--json"])
    assert json.loads(res.stdout)["split"]["count"] == 3
    res = CliRunner().invoke(app, ["convert", str(src), "-o", str(tmp_path / "d.gguf"), "--split-max-size", "5T"])
    assert res.exit_code == 2 and "--split-max-size" in res.output


def test_published_shards_in_manifest(tiny_dir, tmp_path):
    # The digests are taken while writing; verify_manifest hashes the files on disk again.
    from helpers import verify_manifest

    from exaone_gguf.publish import publish

    res = publish(tiny_dir("exaone4"), tmp_path / "rel", ConvertOptions(outtype="bf16,q8_0", split_max_size="10M"))
    shards = [p for v in res.variants for p in v.files]
    assert len(shards) > 2 and all("-of-0000" in p.name for p in shards)
    listed = {line.split("  ", 1)[1] for line in res.manifest.read_text().splitlines()}
    assert {p.name for p in shards} <= listed
    assert verify_manifest(res.manifest) == []
