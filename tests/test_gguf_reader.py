"""The strict GGUF reader: round trip against gguf-py, speed on a real-sized vocab, a corpus of
malformed files (one per failure class of llama.cpp's tests/test-gguf.cpp) under a memory
limit, and byte-mutation fuzzing."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io import GGUFFile, SplitInfo, read_gguf

ROOT = Path(__file__).resolve().parents[1]
KOREAN = "안녕하세요, 엑사온! [|endofturn|]"

# One value per scalar type, and a short array per element type.
SCALARS = {
    V.UINT8: 200,
    V.INT8: -100,
    V.UINT16: 60000,
    V.INT16: -30000,
    V.UINT32: 4_000_000_000,
    V.INT32: -2_000_000_000,
    V.FLOAT32: 1.5,
    V.UINT64: 2**63 + 5,
    V.INT64: -(2**62),
    V.FLOAT64: 3.141592653589793,
    V.BOOL: True,
    V.STRING: KOREAN,
}
ARRAYS = {
    V.UINT8: [0, 1, 255],
    V.INT8: [-128, 0, 127],
    V.UINT16: [0, 65535],
    V.INT16: [-32768, 32767],
    V.UINT32: [0, 2**32 - 1],
    V.INT32: [-(2**31), 2**31 - 1],
    V.FLOAT32: [0.5, -2.25, 1e30],
    V.UINT64: [0, 2**64 - 1],
    V.INT64: [-(2**63), 2**63 - 1],
    V.FLOAT64: [1e-300, -1.0],
    V.BOOL: [True, False, True],
    V.STRING: ["", "토큰", "a b", "▁한국어"],
}


def _write_reference(path: Path, *, extra_kv=None, tensors=None) -> dict[str, np.ndarray]:
    """A file written by gguf.GGUFWriter with every value type and F32/F16/BF16/Q8_0 tensors."""
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    for vt, val in SCALARS.items():
        w.add_key_value(f"test.scalar.{vt.name.lower()}", val, vt)
    for vt, val in ARRAYS.items():
        w.add_key_value(f"test.array.{vt.name.lower()}", val, V.ARRAY, sub_type=vt)
    for key, (val, vt) in (extra_kv or {}).items():
        w.add_key_value(key, val, vt)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    srcs = (
        tensors
        if tensors is not None
        else {"t.f32": (x, Q.F32), "t.f16": (x, Q.F16), "t.bf16": (x, Q.BF16), "t.q8_0": (x, Q.Q8_0)}
    )
    for name, (arr, qt) in srcs.items():
        if qt in (Q.F32, Q.F16):
            w.add_tensor(name, gguf.quants.quantize(arr, qt))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {name: arr for name, (arr, _) in srcs.items()}


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "ref.gguf"
    _write_reference(path)
    return path


# -- round trip ---------------------------------------------------------------------------------


def test_round_trip_matches_gguf_reader(reference_file: Path) -> None:
    ours = read_gguf(reference_file)
    theirs = gguf.GGUFReader(str(reference_file))
    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.metadata) == list(fields)
    assert ours.version == 3
    assert ours.alignment == theirs.alignment == 32
    assert ours.data_offset == theirs.data_offset
    for key, field in fields.items():
        vtype, sub = ours.types[key]
        assert vtype == field.types[0], key
        value = ours.metadata[key]
        if vtype == V.ARRAY:
            assert sub == field.types[-1], key
            if sub == V.STRING:
                assert value == field.contents(), key
            else:
                assert isinstance(value, np.ndarray), key
                assert np.array_equal(value, np.array(field.contents())), key
        else:
            assert sub is None
            assert value == field.contents(), key
    # the Python values themselves (not only "equal to gguf-py")
    assert ours.get("test.scalar.string") == KOREAN
    assert ours.get("test.scalar.bool") is True
    assert ours.get("test.scalar.uint64") == 2**63 + 5
    assert ours.get("test.array.string") == ARRAYS[V.STRING]
    assert ours.get("test.array.bool").dtype == np.bool_
    assert ours.get("test.array.uint64")[1] == 2**64 - 1
    assert ours.get("missing", 7) == 7
    assert ours.architecture == "llama"

    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, ref in zip(ours.tensors, theirs.tensors):
        assert mine.shape == tuple(int(d) for d in ref.shape)
        assert mine.tensor_type == ref.tensor_type
        assert mine.offset == ref.data_offset
        assert mine.nbytes == ref.n_bytes
        assert mine.n_elements == ref.n_elements
        view = ours.tensor_bytes(mine)
        assert view.dtype == np.uint8 and not view.flags.writeable
        assert view.tobytes() == ref.data.tobytes()
    ours.close()


def test_tensor_f32_values(tmp_path: Path) -> None:
    path = tmp_path / "t.gguf"
    src = _write_reference(path)
    with read_gguf(path) as f:
        x = src["t.f32"]
        assert f.tensor("t.f32").np_shape == x.shape
        assert np.array_equal(f.tensor_f32("t.f32"), x)
        assert np.array_equal(f.tensor_f32("t.f16"), x.astype(np.float16).astype(np.float32))
        bf16 = gguf.quants.dequantize(gguf.quants.quantize(x, Q.BF16), Q.BF16)
        assert np.array_equal(f.tensor_f32("t.bf16"), bf16)
        q8 = gguf.quants.dequantize(gguf.quants.quantize(x, Q.Q8_0), Q.Q8_0)
        assert np.array_equal(f.tensor_f32("t.q8_0"), q8)
        assert np.abs(f.tensor_f32("t.q8_0") - x).max() < 0.05
        with pytest.raises(InputError, match="no tensor named 'nope'"):
            f.tensor_bytes("nope")
    with pytest.raises(InputError, match="closed"):
        f.tensor_bytes("t.f32")


def test_version_2_reads_like_version_3(tmp_path: Path, reference_file: Path) -> None:
    data = bytearray(reference_file.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    path = tmp_path / "v2.gguf"
    path.write_bytes(bytes(data))
    f2, f3 = read_gguf(path), read_gguf(reference_file)
    assert f2.version == 2
    assert f2.metadata.keys() == f3.metadata.keys()
    assert f2.tensors == f3.tensors  # same layout, same absolute offsets
    f2.close()
    f3.close()


def test_split_keys_are_exposed(tmp_path: Path) -> None:
    path = tmp_path / "shard.gguf"
    _write_reference(
        path, extra_kv={"split.no": (1, V.UINT16), "split.count": (3, V.UINT16), "split.tensors.count": (12, V.INT32)}
    )
    with read_gguf(path) as f:
        assert f.split == SplitInfo(no=1, count=3, tensors_count=12)
        assert f.get("split.count") == 3
    plain = tmp_path / "plain.gguf"
    _write_reference(plain)
    with read_gguf(plain) as f:
        assert f.split is None


def test_unquantizable_type_and_bad_paths(tmp_path: Path) -> None:
    # Q8_1 has no numpy dequantizer in gguf-py: a clear InputError, not NotImplementedError
    path = tmp_path / "q81.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("q", np.zeros((2, 40 * 2), dtype=np.uint8), raw_dtype=Q.Q8_1)  # 2 rows of 64
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with read_gguf(path) as f:
        assert f.tensors[0].nbytes == 160 and f.tensors[0].shape == (64, 2)
        with pytest.raises(InputError, match="cannot be dequantized"):
            f.tensor_f32("q")
    with pytest.raises(InputError, match="does not exist"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(InputError, match="directory"):
        read_gguf(tmp_path)
    os.mkfifo(tmp_path / "fifo.gguf")  # opening it would block forever
    with pytest.raises(InputError, match="not a regular file"):
        read_gguf(tmp_path / "fifo.gguf")


# -- speed ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_large_vocab_parses_fast(tmp_path: Path) -> None:
    n_vocab, n_merges = 102400, 100_000
    path = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "exaone")
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"▁토큰{i}" if i % 3 else f"tok{i}" for i in range(n_vocab)])
    w.add_token_types([1 + (i % 5 == 0) for i in range(n_vocab)])
    w.add_token_merges([f"a{i} ▁b{i}" for i in range(n_merges)])
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    t0 = time.perf_counter()
    f = read_gguf(path)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = gguf.GGUFReader(str(path))
    theirs = time.perf_counter() - t0
    print(
        f"\n102400-token vocab + 100k merges: exaone_gguf reader {ours:.3f} s, "
        f"gguf.GGUFReader {theirs:.3f} s ({theirs / ours:.0f}x)"
    )

    tokens = f.get("tokenizer.ggml.tokens")
    assert len(tokens) == n_vocab and tokens[1] == "▁토큰1" and tokens[3] == "tok3"
    assert tokens == ref.fields["tokenizer.ggml.tokens"].contents()
    types = f.get("tokenizer.ggml.token_type")
    assert types.dtype == np.int32 and types.shape == (n_vocab,) and int(types.sum()) == n_vocab + 20480
    merges = f.get("tokenizer.ggml.merges")
    assert len(merges) == n_merges and merges[-1] == "a99999 ▁b99999"
    f.close()


# -- malformed corpus -------------------------------------------------------------------------------


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


def _i32(v: int) -> bytes:
    return struct.pack("<i", v)


def _u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def _i64(v: int) -> bytes:
    return struct.pack("<q", v)


def _str(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return _u64(len(b)) + b


def _kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return _str(key) + _i32(vtype) + payload


def _tinfo(name: str | bytes, shape: list[int], ttype: int, offset: int, n_dims: int | None = None) -> bytes:
    nd = len(shape) if n_dims is None else n_dims
    return _str(name) + _u32(nd) + b"".join(_i64(d) for d in shape) + _i32(ttype) + _u64(offset)


ARCH = _kv("general.architecture", V.STRING, _str("llama"))
T_A = _tinfo("a", [8, 2], Q.F32, 0)  # 64 bytes
T_B = _tinfo("b", [8], Q.F32, 64)  # 32 bytes


def _file(
    kvs=(ARCH,),
    tinfos=(T_A, T_B),
    data: bytes | None = None,
    *,
    magic=b"GGUF",
    version=3,
    n_kv=None,
    n_tensors=None,
    align=32,
) -> bytes:
    head = (
        magic
        + _u32(version)
        + _u64(len(tinfos) if n_tensors is None else n_tensors)
        + _u64(len(kvs) if n_kv is None else n_kv)
        + b"".join(kvs)
        + b"".join(tinfos)
    )
    head += b"\0" * (-len(head) % align)
    return head + (bytes(range(96)) if data is None else data)


def _malformed_corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, regex the InputError message must match)."""
    huge = 2**64 - 1
    c: dict[str, tuple[bytes, str]] = {
        "empty": (b"", "too small"),
        "bad_magic": (_file(magic=b"GGML"), "bad magic"),
        "version_0": (_file(version=0), "unsupported GGUF version 0"),
        "version_1": (_file(version=1), "version 1"),
        "version_future": (_file(version=4), "unsupported GGUF version 4"),
        "big_endian": (_file(version=0x03000000), "big-endian"),
        "n_tensors_huge": (_file(n_tensors=huge), "claims 18446744073709551615 tensors"),
        "n_kv_huge": (_file(n_kv=huge), "claims 18446744073709551615 key-value pairs"),
        "n_kv_too_many": (_file(n_kv=5), "truncated|value type|length of"),
        "key_size_huge": (_file(kvs=(_u64(huge) + b"x" * 16,)), "key 0 needs 18446744073709551615 bytes"),
        "empty_key": (_file(kvs=(_kv("", V.UINT8, b"\1"),)), "key 0 is empty"),
        "key_not_utf8": (_file(kvs=(_kv(b"\xff\xfe", V.UINT8, b"\1"),)), "key 0 is not valid UTF-8"),
        "bad_value_type": (_file(kvs=(_kv("k", 13, b"\0" * 8),)), "13, not a known GGUF value type"),
        "negative_value_type": (_file(kvs=(_kv("k", -1, b"\0" * 8),)), "-1, not a known GGUF value type"),
        "bad_array_type": (
            _file(kvs=(_kv("k", V.ARRAY, _i32(13) + _u64(1) + b"\0" * 8),)),
            "element type of array 'k' is 13",
        ),
        "nested_array": (_file(kvs=(_kv("k", V.ARRAY, _i32(V.ARRAY) + _u64(1) + b"\0" * 16),)), "array of arrays"),
        "string_len_huge": (_file(kvs=(_kv("k", V.STRING, _u64(2**62)),)), "value of key 'k' needs"),
        "string_not_utf8": (_file(kvs=(_kv("k", V.STRING, _str(b"ok\xc3\x28")),)), "not valid UTF-8"),
        "array_len_huge": (
            _file(kvs=(_kv("k", V.ARRAY, _i32(V.UINT32) + _u64(2**62)),)),
            r"array 'k' needs 18446744073709551616 bytes",
        ),
        "string_array_len_huge": (_file(kvs=(_kv("k", V.ARRAY, _i32(V.STRING) + _u64(2**61)),)), "array 'k' needs"),
        "string_array_elem_huge": (
            _file(kvs=(_kv("k", V.ARRAY, _i32(V.STRING) + _u64(2) + _str("a") + _u64(2**60)),)),
            "element 1 has length",
        ),
        "string_array_not_utf8": (
            _file(kvs=(_kv("k", V.ARRAY, _i32(V.STRING) + _u64(2) + _str("a") + _str(b"\x80")),)),
            "element 1 is not valid UTF-8",
        ),
        "bool_not_0_1": (_file(kvs=(_kv("k", V.BOOL, b"\2"),)), "holds byte 2"),
        "bool_array_not_0_1": (
            _file(kvs=(_kv("k", V.ARRAY, _i32(V.BOOL) + _u64(2) + b"\1\7"),)),
            "bool byte other than 0 or 1",
        ),
        "duplicate_key": (_file(kvs=(ARCH, ARCH)), "'general.architecture' appears twice"),
        "alignment_13": (_file(kvs=(_kv("general.alignment", V.UINT32, _u32(13)),)), "13, not a power of two"),
        "alignment_0": (_file(kvs=(_kv("general.alignment", V.UINT32, _u32(0)),)), "0, not a power of two"),
        "alignment_wrong_type": (
            _file(kvs=(_kv("general.alignment", V.INT32, _i32(32)),)),
            "type INT32, but it must be UINT32",
        ),
        "split_inconsistent": (
            _file(
                kvs=(
                    _kv("split.no", V.UINT16, struct.pack("<H", 3)),
                    _kv("split.count", V.UINT16, struct.pack("<H", 3)),
                )
            ),
            "inconsistent",
        ),
        "split_wrong_type": (_file(kvs=(_kv("split.count", V.STRING, _str("3")),)), "must be an integer"),
        "tensor_name_size_huge": (_file(tinfos=(_u64(huge) + b"a" * 32,)), "name of tensor 0 needs"),
        "tensor_name_too_long": (_file(tinfos=(_tinfo("x" * 64, [8, 2], Q.F32, 0),)), "63-byte limit"),
        "tensor_name_empty": (_file(tinfos=(_tinfo("", [8, 2], Q.F32, 0),)), "empty name"),
        "tensor_name_not_utf8": (_file(tinfos=(_tinfo(b"\xc0", [8, 2], Q.F32, 0),)), "not valid UTF-8"),
        "duplicate_tensor": (_file(tinfos=(T_A, _tinfo("a", [8], Q.F32, 64))), "'a' appears twice"),
        "n_dims_5": (_file(tinfos=(_tinfo("a", [1, 1, 1, 1, 8], Q.F32, 0),)), "5 dimensions"),
        "n_dims_huge": (_file(tinfos=(_tinfo("a", [8], Q.F32, 0, n_dims=2**32 - 1),)), "4294967295 dimensions"),
        "negative_dim": (_file(tinfos=(_tinfo("a", [-1, -1], Q.F32, 0),)), "negative dimension"),
        "zero_dim": (_file(tinfos=(_tinfo("a", [8, 0], Q.F32, 0),)), "zero dimension"),
        "ne_overflow": (_file(tinfos=(_tinfo("a", [4 * (2**31 - 1)] * 4, Q.F32, 0),)), "overflows int64"),
        "nbytes_too_big": (_file(tinfos=(_tinfo("a", [2**31, 2**31], Q.I64, 0),)), "runs past the end"),
        "nbytes_pad_wrap": (_file(tinfos=(_tinfo("a", [4, 2**30 - 1, 2**30 + 1], Q.F32, 0),)), "runs past the end"),
        "mem_size_overflow": (
            _file(
                tinfos=(
                    _tinfo("a", [0x7FFFFFFFFFFFFFC0], Q.I8, 0),
                    _tinfo("b", [0x7FFFFFFFFFFFFFC0], Q.I8, 0x7FFFFFFFFFFFFFC0),
                )
            ),
            "runs past the end",
        ),
        "bad_tensor_type": (_file(tinfos=(_tinfo("a", [8, 2], 43, 0),)), "unknown ggml type 43"),
        "removed_tensor_type": (_file(tinfos=(_tinfo("a", [8, 2], 4, 0),)), "unknown ggml type 4"),
        "negative_tensor_type": (_file(tinfos=(_tinfo("a", [8, 2], -1, 0),)), "unknown ggml type -1"),
        "row_not_block_multiple": (
            _file(tinfos=(_tinfo("a", [33, 2], Q.Q8_0, 0),)),
            "not a multiple of the block size 32",
        ),
        "offset_huge": (_file(tinfos=(T_A, _tinfo("b", [8], Q.F32, huge))), "not a multiple of the alignment"),
        "offset_huge_aligned": (_file(tinfos=(T_A, _tinfo("b", [8], Q.F32, 2**64 - 32))), "llama.cpp expects 64"),
        "offset_misaligned": (_file(tinfos=(T_A, _tinfo("b", [8], Q.F32, 65))), "not a multiple of the alignment"),
        "offset_overlap": (_file(tinfos=(T_A, _tinfo("b", [8], Q.F32, 32))), "overlaps the previous tensor"),
        "offset_first_not_zero": (_file(tinfos=(_tinfo("a", [8, 2], Q.F32, 32), T_B)), "expects 0"),
        "inconsistent_align": (
            _file(tinfos=(_tinfo("a", [3], Q.F32, 0), _tinfo("b", [8], Q.F32, 12))),
            "not a multiple of the alignment",
        ),
        "data_missing": (_file(data=b""), "truncated"),
        "data_short": (_file(data=bytes(95)), "'b' data .* runs past the end of the file"),
    }
    # truncation at every byte of the header and inside the data of a valid file
    full = _file()
    end = len(full)  # data ends exactly at EOF
    for cut in sorted({*range(0, 120, 1), *range(120, end, 7)}):
        c[f"truncated_at_{cut}"] = (full[:cut], "truncated|too small")
    return c


def test_corpus_builder_makes_a_valid_base(tmp_path: Path) -> None:
    """The corpus mutates a file the reader accepts; prove the base is valid."""
    path = tmp_path / "base.gguf"
    path.write_bytes(_file())
    with read_gguf(path) as f:
        assert [(t.name, t.shape, t.nbytes) for t in f.tensors] == [("a", (8, 2), 64), ("b", (8,), 32)]
        assert f.tensor_bytes("b").tobytes() == bytes(range(64, 96))
    ref = gguf.GGUFReader(str(path))  # gguf-py agrees
    assert [t.name for t in ref.tensors] == ["a", "b"]


_CHILD = textwrap.dedent("""
    import json, resource, sys
    limit = 2 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        bytearray(3 * 1024**3)
        limited = False
    except MemoryError:
        limited = True
    from exaone_gguf.errors import InputError
    from exaone_gguf.gguf_io import read_gguf
    results = {"__limited__": limited}
    for path in sys.argv[1:]:
        try:
            with read_gguf(path) as f:
                for t in f.tensors:
                    f.tensor_f32(t)
            results[path] = ["ok", ""]
        except InputError as e:
            results[path] = ["InputError", str(e)]
        except BaseException as e:
            results[path] = [type(e).__name__, str(e)]
    print(json.dumps(results))
""")


def test_malformed_corpus_under_memory_limit(tmp_path: Path) -> None:
    corpus = _malformed_corpus()
    assert len(corpus) >= 20
    paths = {}
    for name, (data, _) in corpus.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data)
        paths[name] = str(p)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *paths.values()], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert results.pop("__limited__") is True, "RLIMIT_AS did not take effect"
    for name, (_, pattern) in corpus.items():
        kind, msg = results[paths[name]]
        assert kind == "InputError", f"{name}: {kind}: {msg}"
        assert msg.startswith(paths[name] + ": "), f"{name}: message does not name the file: {msg}"
        assert re.search(pattern, msg), f"{name}: {msg!r} does not match {pattern!r}"
        assert msg.count("\n") == 0


def test_truncated_gguf_writer_file(tmp_path: Path, reference_file: Path) -> None:
    """Every cut of a real gguf-py file before its last tensor byte fails; cuts in the final
    padding still read (llama.cpp only needs the unpadded tensor bytes)."""
    data = reference_file.read_bytes()
    with read_gguf(reference_file) as f:
        end = max(t.offset + t.nbytes for t in f.tensors)
        header_end = f.data_offset
    cuts = sorted({*range(0, header_end + 1, 3), *range(header_end, end, 97), end - 1, end, len(data)})
    path = tmp_path / "cut.gguf"
    for cut in cuts:
        path.write_bytes(data[:cut])
        if cut < end:
            with pytest.raises(InputError, match="truncated|too small"):
                read_gguf(path)
        else:
            read_gguf(path).close()


# -- fuzzing ----------------------------------------------------------------------------------------


def _fuzz_base() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "base.gguf"
        rng = np.random.default_rng(1)
        x = rng.standard_normal((2, 32)).astype(np.float32)
        w = gguf.GGUFWriter(str(p), "llama")
        w.add_uint32("llama.block_count", 1)
        w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        w.add_bool("flag", True)
        w.add_string("general.name", "작은 모델")
        w.add_key_value("tokenizer.ggml.tokens", ["a", "bb", "토큰"], V.ARRAY, sub_type=V.STRING)
        w.add_key_value("tokenizer.ggml.token_type", [1, 2, 3], V.ARRAY, sub_type=V.INT32)
        w.add_tensor("f32", x)
        w.add_tensor("f16", x.astype(np.float16))
        w.add_tensor("q8", gguf.quants.quantize(x, Q.Q8_0), raw_dtype=Q.Q8_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return p.read_bytes()


FUZZ_BASE = _fuzz_base()
FUZZ_HEADER = FUZZ_BASE.index(b"q8") + 40  # mutations past the tensor table rarely matter


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(0, FUZZ_HEADER), st.integers(0, 255)), min_size=1, max_size=6),
    big=st.lists(st.tuples(st.integers(0, FUZZ_HEADER), st.sampled_from([0xFF, 0x7F, 0x80, 0x40])), max_size=2),
    cut=st.one_of(st.none(), st.integers(0, len(FUZZ_BASE))),
)
@pytest.mark.slow
def test_fuzz_mutated_bytes(tmp_path: Path, edits, big, cut) -> None:
    data = bytearray(FUZZ_BASE)
    for pos, val in edits:
        data[pos] = val
    for pos, val in big:  # set a whole 8-byte word high: lengths and counts become huge
        data[pos : pos + 8] = bytes([0xFF] * 7 + [val])
    if cut is not None:
        del data[cut:]
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(data))
    try:
        f = read_gguf(path)
    except InputError as e:
        assert str(e).startswith(str(path))
        return
    with f:
        assert isinstance(f, GGUFFile)
        for t in f.tensors:
            assert f.tensor_bytes(t).size == t.nbytes
            try:
                f.tensor_f32(t)
            except InputError:
                pass
