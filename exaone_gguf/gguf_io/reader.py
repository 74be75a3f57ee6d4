"""A strict, fast reader for GGUF v2/v3 little-endian files.

Why not `gguf.GGUFReader`: it parses metadata arrays one element at a time (seconds for a
100k-token vocab) and fails on broken files with numpy errors instead of a clear message.
This reader checks every count, length and offset against the bytes that remain *before*
allocating anything, so a hostile file cannot make it allocate more than the file's size,
and every problem surfaces as one `InputError` sentence.

Layout (gguf.cpp / gguf-py constants): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
n_kv x (string key, i32 type, value), n_tensors x (string name, u32 n_dims, n_dims x i64 ne,
i32 ggml type, u64 offset), padding to `general.alignment`, tensor data. A string is a u64
byte length followed by UTF-8 bytes; an array is i32 element type, u64 count, elements.

The checks follow llama.cpp's loader (ggml/src/gguf.cpp and tests/test-gguf.cpp), plus a few
stricter ones: zero-sized dimensions, empty tensor names, bool bytes other than 0/1 and
invalid UTF-8 are rejected too.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from exaone_gguf.elements import bf16_bits_to_f32, f16_bits_to_f32
from exaone_gguf.errors import InputError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 63  # GGML_MAX_NAME (64) including the terminating NUL
INT64_MAX = 2**63 - 1

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")

# Fixed-size value types: (struct for scalars, numpy dtype for arrays). BOOL is handled apart.
_SCALAR: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_DTYPE: dict[GGUFValueType, np.dtype] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}
_INTEGER_TYPES = {t for t in _DTYPE if _DTYPE[t].kind in "iu"}

# Smallest possible encodings, used to reject absurd counts before looping over them.
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, type, 1-byte value (u8/i8/bool)
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 4 + 8  # name length, 1-byte name, n_dims=0, type, offset

_FIX_HINT = "re-download or re-convert the file"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry. `shape` is in GGUF order (ne[0] = innermost, row length)."""

    name: str
    shape: tuple[int, ...]
    tensor_type: GGMLQuantizationType
    offset: int  # absolute offset of the first byte in the file
    nbytes: int
    n_elements: int

    @property
    def type_name(self) -> str:
        return self.tensor_type.name

    @property
    def np_shape(self) -> tuple[int, ...]:
        """numpy (row-major) shape: the GGUF shape reversed."""
        return tuple(reversed(self.shape))


@dataclass(frozen=True)
class SplitInfo:
    """The `split.*` keys that llama.cpp's gguf-split writes into every shard."""

    no: int  # 0-based shard index
    count: int
    tensors_count: int | None


class GGUFFile:
    """A parsed GGUF file. Metadata is copied out; tensor data stays memory-mapped.

    Use as a context manager (or call `close()`) to release the mapping early.
    """

    version: int
    metadata: dict[str, Any]
    types: dict[str, tuple[GGUFValueType, GGUFValueType | None]]
    alignment: int
    data_offset: int
    tensors: list[TensorInfo]
    file_size: int

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._mm: mmap.mmap | None = None
        self._buf: np.ndarray | None = None
        self.metadata = {}
        self.types = {}
        self.tensors = []
        self._by_name: dict[str, TensorInfo] = {}
        self._open()
        try:
            _Parser(self).parse()
        except BaseException:
            self.close()
            raise

    # -- file handling ---------------------------------------------------------------------

    def _fail(self, problem: str, hint: str = _FIX_HINT) -> InputError:
        return InputError(f"{self.path}: {problem}; {hint}.")

    def _open(self) -> None:
        try:
            # check before open(): opening a FIFO would block, a device never ends
            if self.path.exists() and not self.path.is_dir() and not self.path.is_file():
                raise self._fail("is not a regular file", "pass the path of a .gguf file")
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 4 + 4 + 8 + 8:
                    raise self._fail(
                        f"the file is only {size} bytes, too small to be a GGUF file",
                        "check the path or re-download the file",
                    )
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except InputError:
            raise
        except FileNotFoundError:
            raise self._fail("does not exist", "check the path") from None
        except IsADirectoryError:
            raise self._fail("is a directory, not a GGUF file", "pass the path of a .gguf file") from None
        except PermissionError:
            raise self._fail("cannot be read (permission denied)", "check the file permissions") from None
        except (OSError, ValueError) as e:
            raise self._fail(f"cannot be opened or mapped ({e})", "check the path") from None
        self.file_size = len(self._mm)
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)

    def close(self) -> None:
        """Release the memory map. Views returned by `tensor_bytes` keep it alive until freed."""
        self._buf = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # a caller still holds a tensor view; the mapping goes when it is freed
            self._mm = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- accessors -------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.metadata

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def split(self) -> SplitInfo | None:
        """Shard position from `split.no` / `split.count` (None for an unsplit file)."""
        if "split.count" not in self.metadata:
            return None
        return SplitInfo(
            no=int(self.metadata.get("split.no", 0)),
            count=int(self.metadata["split.count"]),
            tensors_count=(
                int(self.metadata["split.tensors.count"]) if "split.tensors.count" in self.metadata else None
            ),
        )

    def tensor(self, name: str) -> TensorInfo:
        info = self._by_name.get(name)
        if info is None:
            raise self._fail(f"has no tensor named {name!r}", "check the tensor name")
        return info

    def tensor_bytes(self, name_or_info: str | TensorInfo) -> np.ndarray:
        """The tensor's raw bytes as a read-only uint8 view into the file mapping."""
        info = self.tensor(name_or_info if isinstance(name_or_info, str) else name_or_info.name)
        if self._buf is None:
            raise self._fail("was closed before reading its tensor data", "keep the file open")
        return self._buf[info.offset : info.offset + info.nbytes]

    def release(self, name_or_info: str | TensorInfo, start: int = 0, stop: int | None = None) -> None:
        """Tell the kernel the mapped pages of bytes [start, stop) of a tensor (default: all) may leave this
        process (they stay in the page cache, a later read is cheap): reading a multi-GB file whole then keeps
        the resident set near one chunk instead of the file's size."""
        info = self.tensor(name_or_info if isinstance(name_or_info, str) else name_or_info.name)
        stop = info.nbytes if stop is None else min(stop, info.nbytes)
        if self._mm is None or stop <= start or not hasattr(mmap, "MADV_DONTNEED"):
            return
        begin = info.offset + start
        first = begin // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            self._mm.madvise(mmap.MADV_DONTNEED, first, info.offset + stop - first)
        except (OSError, ValueError):  # a platform without madvise: the pages simply stay
            pass

    def tensor_f32(self, name_or_info: str | TensorInfo) -> np.ndarray:
        """The tensor as float32 in numpy shape (GGUF shape reversed); quantized types are
        dequantized with gguf.quants."""
        info = self.tensor(name_or_info if isinstance(name_or_info, str) else name_or_info.name)
        return self.rows_f32(info).reshape(info.np_shape)

    def rows_f32(self, name_or_info: str | TensorInfo, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of a tensor (a row is its ne[0] values) as a new float32 array [rows, ne[0]];
        quantized types are dequantized with gguf.quants."""
        info = self.tensor(name_or_info if isinstance(name_or_info, str) else name_or_info.name)
        t = info.tensor_type
        row_len = info.shape[0] if info.shape else 1
        stop = info.n_elements // row_len if stop is None else stop
        block, type_size = GGML_QUANT_SIZES[t]
        row_bytes = row_len // block * type_size
        raw = self.tensor_bytes(info)[start * row_bytes : stop * row_bytes]
        plain = {
            GGMLQuantizationType.F32: "<f4",
            GGMLQuantizationType.F16: "<f2",
            GGMLQuantizationType.F64: "<f8",
            GGMLQuantizationType.I8: "<i1",
            GGMLQuantizationType.I16: "<i2",
            GGMLQuantizationType.I32: "<i4",
            GGMLQuantizationType.I64: "<i8",
        }
        if t == GGMLQuantizationType.BF16:
            out = bf16_bits_to_f32(raw.view("<u2"))
        elif t == GGMLQuantizationType.F16:
            out = f16_bits_to_f32(raw.view("<u2"))
        elif t in plain:
            out = raw.view(plain[t]).astype(np.float32)
        else:
            from gguf import quants  # imported lazily: only quantized tensors need it

            try:
                with np.errstate(all="ignore"):
                    out = np.asarray(quants.dequantize(raw.reshape(-1, row_bytes), t), dtype=np.float32)
            except (NotImplementedError, ValueError, IndexError) as e:
                raise self._fail(
                    f"tensor {info.name!r} of type {t.name} cannot be dequantized here ({e})",
                    "use llama.cpp to convert it",
                ) from None
        return out.reshape(stop - start, row_len)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, v{self.version}, {len(self.metadata)} keys, {len(self.tensors)} tensors)"


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse `path` strictly; raise InputError with one sentence on any problem."""
    return GGUFFile(path)


class _Parser:
    """Cursor over the mapping; every read is bounds-checked first."""

    def __init__(self, f: GGUFFile) -> None:
        assert f._mm is not None
        self.f = f
        self.mm = f._mm
        self.size = f.file_size
        self.pos = 0

    # -- primitives ------------------------------------------------------------------------

    def fail(self, problem: str, hint: str = _FIX_HINT) -> InputError:
        return self.f._fail(problem, hint)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(
                f"{what} needs {n} bytes at offset {self.pos} but only {self.size - self.pos} remain (truncated?)"
            )

    def unpack(self, s: struct.Struct, what: str) -> Any:
        self.need(s.size, what)
        (v,) = s.unpack_from(self.mm, self.pos)
        self.pos += s.size
        return v

    def string(self, what: str) -> str:
        n = self.unpack(_U64, f"the length of {what}")
        self.need(n, what)
        raw = self.mm[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def string_array(self, n: int, what: str) -> list[str]:
        # Hot loop for vocabularies: locals only, one bounds check per string.
        self.need(8 * n, what)  # every element has at least its u64 length
        mm, pos, size = self.mm, self.pos, self.size
        unpack = _U64.unpack_from
        out: list[str] = [""] * n
        i = 0
        try:
            for i in range(n):
                if size - pos < 8:
                    raise self.fail(f"{what} element {i} runs past the end of the file (truncated?)")
                (ln,) = unpack(mm, pos)
                pos += 8
                if ln > size - pos:
                    raise self.fail(
                        f"{what} element {i} has length {ln} but only {size - pos} bytes remain (truncated?)"
                    )
                out[i] = mm[pos : pos + ln].decode("utf-8")
                pos += ln
        except UnicodeDecodeError:
            raise self.fail(f"{what} element {i} is not valid UTF-8") from None
        self.pos = pos
        return out

    def numeric_array(self, vtype: GGUFValueType, n: int, what: str) -> np.ndarray:
        dt = _DTYPE[vtype]
        self.need(n * dt.itemsize, what)  # Python ints: the product cannot overflow
        arr = np.frombuffer(self.mm, dtype=dt, count=n, offset=self.pos).astype(dt.newbyteorder("="))
        self.pos += n * dt.itemsize
        return arr

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.unpack(_I32, what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.fail(f"{what} is {raw}, not a known GGUF value type (0-12)") from None

    # -- sections --------------------------------------------------------------------------

    def parse(self) -> None:
        self.header()
        self.key_values()
        self.alignment()
        self.tensor_infos()
        self.data_section()

    def header(self) -> None:
        magic = bytes(self.mm[0:4])
        if magic != GGUF_MAGIC:
            raise self.fail(f"bad magic {magic!r}, expected b'GGUF': this is not a GGUF file", "check the path")
        self.pos = 4
        version = self.unpack(_U32, "the version")
        if version not in SUPPORTED_VERSIONS:
            if version & 0xFFFF == 0 and version != 0:
                problem = (
                    f"the version field reads {version:#x}, so this is a big-endian GGUF file, which is not supported"
                )
            elif version == 1:
                problem = "the file is GGUF version 1, which llama.cpp no longer supports"
            else:
                problem = f"the file has unsupported GGUF version {version} (supported: 2 and 3)"
            raise self.fail(problem, "re-convert it with a current converter")
        self.f.version = version
        self.n_tensors = self.unpack(_U64, "the tensor count")
        self.n_kv = self.unpack(_U64, "the key-value count")
        remain = self.size - self.pos
        # Python ints: these products cannot overflow, so a count near 2**64 is caught here
        if self.n_kv * _MIN_KV_BYTES > remain:
            raise self.fail(f"header claims {self.n_kv} key-value pairs but only {remain} bytes follow (truncated?)")
        if self.n_tensors * _MIN_TENSOR_INFO_BYTES + self.n_kv * _MIN_KV_BYTES > remain:
            raise self.fail(f"header claims {self.n_tensors} tensors but only {remain} bytes follow (truncated?)")

    def key_values(self) -> None:
        md, types = self.f.metadata, self.f.types
        for i in range(self.n_kv):
            key = self.string(f"key {i}")
            if not key:
                raise self.fail(f"key {i} is empty")
            if key in md:
                raise self.fail(f"key {key!r} appears twice")
            vtype = self.value_type(f"the value type of key {key!r}")
            sub: GGUFValueType | None = None
            what = f"the value of key {key!r}"
            if vtype == GGUFValueType.ARRAY:
                sub = self.value_type(f"the element type of array {key!r}")
                if sub == GGUFValueType.ARRAY:
                    raise self.fail(f"key {key!r} is an array of arrays, which llama.cpp does not support")
                n = self.unpack(_U64, f"the length of array {key!r}")
                if sub == GGUFValueType.STRING:
                    value: Any = self.string_array(n, f"array {key!r}")
                elif sub == GGUFValueType.BOOL:
                    arr = self.numeric_array(GGUFValueType.UINT8, n, f"array {key!r}")
                    if n and int(arr.max()) > 1:
                        raise self.fail(f"array {key!r} holds a bool byte other than 0 or 1")
                    value = arr.view(np.bool_)
                else:
                    value = self.numeric_array(sub, n, f"array {key!r}")
            elif vtype == GGUFValueType.STRING:
                value = self.string(what)
            elif vtype == GGUFValueType.BOOL:
                b = self.unpack(_SCALAR[GGUFValueType.UINT8], what)
                if b > 1:
                    raise self.fail(f"bool key {key!r} holds byte {b}, not 0 or 1")
                value = bool(b)
            else:
                value = self.unpack(_SCALAR[vtype], what)
            md[key] = value
            types[key] = (vtype, sub)

    def alignment(self) -> None:
        f = self.f
        if "general.alignment" in f.types:
            vtype, _ = f.types["general.alignment"]
            if vtype != GGUFValueType.UINT32:
                raise self.fail(f"general.alignment has type {vtype.name}, but it must be UINT32")
            a = f.metadata["general.alignment"]
            if a == 0 or a & (a - 1):
                raise self.fail(f"general.alignment is {a}, not a power of two")
            f.alignment = a
        else:
            f.alignment = DEFAULT_ALIGNMENT
        self.split_keys()

    def split_keys(self) -> None:
        # gguf-split writes split.no (u16), split.count (u16), split.tensors.count (i32).
        md, types = self.f.metadata, self.f.types
        for key in ("split.no", "split.count", "split.tensors.count"):
            if key in types and (types[key][0] not in _INTEGER_TYPES):
                raise self.fail(f"{key} has type {types[key][0].name}, but it must be an integer")
        if "split.count" in md or "split.no" in md:
            no, count = md.get("split.no", 0), md.get("split.count", 1)
            if count < 1 or not 0 <= no < count:
                raise self.fail(f"split.no is {no} and split.count is {count}, which is inconsistent")

    def tensor_infos(self) -> None:
        f = self.f
        for i in range(self.n_tensors):
            name = self.string(f"the name of tensor {i}")
            if not name:
                raise self.fail(f"tensor {i} has an empty name")
            if len(name.encode("utf-8")) > MAX_NAME_BYTES:
                raise self.fail(f"tensor name {name[:40]!r}... is longer than llama.cpp's {MAX_NAME_BYTES}-byte limit")
            if name in f._by_name:
                raise self.fail(f"tensor name {name!r} appears twice")
            n_dims = self.unpack(_U32, f"the dimension count of tensor {name!r}")
            if n_dims > MAX_DIMS:
                raise self.fail(f"tensor {name!r} has {n_dims} dimensions, more than the {MAX_DIMS} ggml allows")
            shape = tuple(self.unpack(_I64, f"the shape of tensor {name!r}") for _ in range(n_dims))
            for d in shape:
                if d <= 0:
                    raise self.fail(
                        f"tensor {name!r} has shape {list(shape)} with a {'zero' if d == 0 else 'negative'} dimension"
                    )
            n_elements = 1
            for d in shape:
                n_elements *= d  # Python ints: exact; compared against int64 below
            if n_elements > INT64_MAX:
                raise self.fail(f"tensor {name!r} has shape {list(shape)} whose element count overflows int64")
            raw_type = self.unpack(_I32, f"the type of tensor {name!r}")
            try:
                ttype = GGMLQuantizationType(raw_type)
            except ValueError:
                raise self.fail(f"tensor {name!r} has unknown ggml type {raw_type}") from None
            block, type_size = GGML_QUANT_SIZES[ttype]
            row = shape[0] if shape else 1
            if row % block:
                raise self.fail(
                    f"tensor {name!r} of type {ttype.name} has rows of {row} elements, "
                    f"not a multiple of the block size {block}"
                )
            nbytes = n_elements // block * type_size
            rel = self.unpack(_U64, f"the data offset of tensor {name!r}")
            info = TensorInfo(name, shape, ttype, rel, nbytes, n_elements)  # offset made absolute later
            f.tensors.append(info)
            f._by_name[name] = info

    def data_section(self) -> None:
        f = self.f
        a = f.alignment
        f.data_offset = -(-self.pos // a) * a
        if not f.tensors:
            return
        if f.data_offset > self.size:
            raise self.fail(
                f"the tensor data section would start at offset {f.data_offset}, past the "
                f"end of the file ({self.size} bytes) (truncated?)"
            )
        # llama.cpp requires each tensor at exactly the end of the previous one, padded to the
        # alignment; that also rules out misalignment and overlap.
        expected = 0
        fixed: list[TensorInfo] = []
        for t in f.tensors:
            rel = t.offset
            if rel % a:
                raise self.fail(f"tensor {t.name!r} has data offset {rel}, not a multiple of the alignment {a}")
            if rel < expected:
                raise self.fail(
                    f"tensor {t.name!r} at data offset {rel} overlaps the previous tensor, which ends at {expected}"
                )
            if rel > expected:
                raise self.fail(
                    f"tensor {t.name!r} has data offset {rel} but llama.cpp expects {expected} "
                    f"(tensors must be packed in order)"
                )
            start = f.data_offset + rel
            if t.nbytes > self.size - start:
                raise self.fail(
                    f"tensor {t.name!r} data ({t.nbytes} bytes at offset {start}) runs past "
                    f"the end of the file ({self.size} bytes) (truncated?)"
                )
            expected = rel + -(-t.nbytes // a) * a
            fixed.append(TensorInfo(t.name, t.shape, t.tensor_type, start, t.nbytes, t.n_elements))
        f.tensors = fixed
        f._by_name = {t.name: t for t in fixed}
