"""A corpus of broken and hostile inputs for the CLI: safetensors, index, config, tokenizer, weights,
chat template, GGUF and output paths.

Each Case builds its input in a fresh directory from one valid tiny checkpoint (hard links for the
files it does not change: a case that changes a file replaces it, never writes through the link)
and returns the command line to run. Tests drive `python -m exaone_gguf` under a memory limit and
check: exit 2, the message, no traceback, nothing left at the output, the source untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# ---------------------------------------------------------------------------------------------
# The valid bases


def make_base(root: Path) -> tuple[Path, Path]:
    """(tiny EXAONE 4 checkpoint with a 2048-token vocab, its BF16 GGUF). ~1 s."""
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.tiny import family_config, make_tiny

    cfg = family_config("exaone4")
    cfg["vocab_size"] = 2048  # the tiny tokenizer's ids stop at 1194: a small vocab keeps every case fast
    cfg_path = root / "base-config.json"
    cfg_path.write_text(json.dumps(cfg))
    ckpt = make_tiny(None, root / "base", from_config=cfg_path)
    gguf = root / "base.gguf"
    convert(ckpt, gguf)
    return ckpt, gguf


def link_copy(src: Path, dst: Path) -> Path:
    """Copy a checkpoint directory: small files copied, large ones hard-linked."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.stat().st_size > 1 << 20:
            os.link(f, dst / f.name)
        else:
            shutil.copyfile(f, dst / f.name)
    return dst


def replace(path: Path, data: bytes | str) -> None:
    """Write a file as a new inode (never through a hard link to the base)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def edit_json(path: Path, fn: Callable[[dict], object]) -> None:
    """Load a JSON file, let `fn` change the object in place, write it back as a new file."""
    obj = json.loads(path.read_text(encoding="utf-8"))
    fn(obj)
    replace(path, json.dumps(obj))


def tree_digest(path: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `path` (or of `path` itself), with symlinks by target."""
    files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*"))
    out = {}
    for p in files:
        rel = str(p.relative_to(path.parent if p == path else path))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


# ---------------------------------------------------------------------------------------------
# safetensors bytes


def st_bytes(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def st_tensor(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def st_parts(path: Path) -> tuple[dict, bytes]:
    """(header dict, data section) of a safetensors file."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def split_shards(ckpt: Path, dup: bool = False) -> tuple[list[str], list[str]]:
    """Split model.safetensors into two shards + an index (tensor names of each shard returned).
    `dup`: the second shard carries the first shard's first tensor too."""
    header, data = st_parts(ckpt / "model.safetensors")
    header.pop("__metadata__", None)
    names = sorted(header, key=lambda n: header[n]["data_offsets"][0])
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    if dup:
        halves[1].append(halves[0][0])
    weight_map = {}
    for i, part in enumerate(halves, 1):
        h, chunks, pos = {}, [], 0
        for n in part:
            b, e = header[n]["data_offsets"]
            h[n] = st_tensor(header[n]["dtype"], header[n]["shape"], pos, pos + e - b)
            chunks.append(data[b:e])
            pos += e - b
        fname = f"model-0000{i}-of-00002.safetensors"
        replace(ckpt / fname, st_bytes(h, b"".join(chunks)))
        weight_map.update({n: fname for n in part})
    (ckpt / "model.safetensors").unlink()
    replace(ckpt / "model.safetensors.index.json", json.dumps({"metadata": {}, "weight_map": weight_map}))
    return halves[0], halves[1]


def poke_value(ckpt: Path, tensor: str, index: int, bits: int) -> None:
    """Set element `index` of a 16-bit tensor in model.safetensors to the raw pattern `bits`."""
    raw = bytearray((ckpt / "model.safetensors").read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    pos = 8 + n + header[tensor]["data_offsets"][0] + 2 * index
    raw[pos : pos + 2] = struct.pack("<H", bits)
    replace(ckpt / "model.safetensors", bytes(raw))


# ---------------------------------------------------------------------------------------------
# GGUF bytes (little-endian v3)

GGUF_STRING, GGUF_U32, GGUF_ARRAY = 8, 4, 9


def _s(x: str | bytes) -> bytes:
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def g_kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def g_str_kv(key: str, value: str) -> bytes:
    return g_kv(key, GGUF_STRING, _s(value))


def g_tensor(name: str | bytes, shape: list[int], ttype: int = 0, offset: int = 0, n_dims: int | None = None) -> bytes:
    dims = len(shape) if n_dims is None else n_dims
    return (
        _s(name)
        + struct.pack("<I", dims)
        + b"".join(struct.pack("<Q", d) for d in shape)
        + struct.pack("<IQ", ttype, offset)
    )


ARCH_KV = g_str_kv("general.architecture", "llama")
T_A = g_tensor("a.weight", [8], 0, 0)
T_B = g_tensor("b.weight", [8], 0, 32)


def gguf_bytes(
    kvs: list[bytes] = (ARCH_KV,),
    tensors: list[bytes] = (T_A, T_B),
    data: bytes | None = None,
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_kv: int | None = None,
    n_tensors: int | None = None,
) -> bytes:
    head = magic + struct.pack(
        "<IQQ", version, len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    head += b"".join(kvs) + b"".join(tensors)
    head += b"\0" * (-len(head) % 32)
    return head + (b"\0" * 64 if data is None else data)


# ---------------------------------------------------------------------------------------------
# The corpus


@dataclass
class Env:
    """Where a case builds its input: `work` (empty), the valid bases, and `out` (an empty folder)."""

    work: Path
    base_ckpt: Path
    base_gguf: Path
    out: Path

    def ckpt(self) -> Path:
        return link_copy(self.base_ckpt, self.work / "src")

    def gguf(self, data: bytes | None = None) -> Path:
        p = self.work / "in.gguf"
        if data is None:
            shutil.copyfile(self.base_gguf, p)
        else:
            p.write_bytes(data)
        return p


@dataclass
class Case:
    name: str
    area: str  # safetensors | index | config | tokenizer | weights | template | gguf | output
    build: Callable[[Env], tuple[list[str], Path]]  # -> (CLI arguments, the source to keep untouched)
    expect: str  # regex the error message must match (case-insensitive)


CASES: list[Case] = []


def case(area: str, expect: str):
    def deco(fn: Callable[[Env], tuple[list[str], Path]]):
        CASES.append(Case(fn.__name__, area, fn, expect))
        return fn

    return deco


def convert_args(src: Path, env: Env, *extra: str) -> tuple[list[str], Path]:
    return ["convert", str(src), "-o", str(env.out / "model.gguf"), *extra], src


def with_weights(env: Env, data: bytes, fname: str = "model.safetensors") -> tuple[list[str], Path]:
    src = env.ckpt()
    replace(src / fname, data)
    return convert_args(src, env)


F32x4 = st_tensor("F32", [4], 0, 16)

# -- safetensors ------------------------------------------------------------------------------


@case("safetensors", r"model\.safetensors.*header length \d+ exceeds the 100 MB limit")
def st_header_over_100mb(env):
    return with_weights(env, st_bytes(b"{}", length=200 * 1024 * 1024))


@case("safetensors", r"model\.safetensors.*header length 1000000 runs past the end")
def st_header_past_eof(env):
    return with_weights(env, st_bytes(b"{}", length=1_000_000))


@case("safetensors", r"model\.safetensors.*too short for a header")
def st_file_too_short(env):
    return with_weights(env, b"\x01\x02\x03")


@case("safetensors", r"model\.safetensors.*not valid UTF-8 JSON")
def st_header_invalid_utf8(env):
    return with_weights(env, st_bytes(b'{"a\xff\xfe": 1}'))


@case("safetensors", r"model\.safetensors.*not valid UTF-8 JSON")
def st_header_invalid_json(env):
    return with_weights(env, st_bytes(b'{"w": {"dtype": "F32", '))


@case("safetensors", r"model\.safetensors.*not valid UTF-8 JSON")
def st_header_deep_nesting(env):
    return with_weights(env, st_bytes(b"[" * 200_000 + b"]" * 200_000))


@case("safetensors", r"model\.safetensors.*header is not a JSON object")
def st_header_not_object(env):
    return with_weights(env, st_bytes(b"[1, 2, 3]"))


@case("safetensors", r"model\.safetensors.*'w' data ends at 32, past the 16-byte data section")
def st_offsets_out_of_bounds(env):
    return with_weights(env, st_bytes({"w": st_tensor("F32", [8], 0, 32)}, b"\0" * 16))


@case("safetensors", r"model\.safetensors.*past the \d+-byte data section")
def st_offsets_huge(env):
    return with_weights(env, st_bytes({"w": st_tensor("F32", [2**32, 2**32, 2**32], 0, 2**98)}, b"\0" * 16))


@case("safetensors", r"model\.safetensors.*overlaps the previous tensor")
def st_overlapping_tensors(env):
    return with_weights(env, st_bytes({"a": F32x4, "b": st_tensor("F32", [4], 8, 24)}, b"\0" * 24))


@case("safetensors", r"model\.safetensors.*leaves a gap before it")
def st_gap_between_tensors(env):
    return with_weights(env, st_bytes({"a": F32x4, "b": st_tensor("F32", [4], 32, 48)}, b"\0" * 48))


@case("safetensors", r"model\.safetensors.*tensors cover 16 of 40 data bytes")
def st_trailing_bytes(env):
    return with_weights(env, st_bytes({"a": F32x4}, b"\0" * 40))


@case("safetensors", r"model\.safetensors.*'a' has 16 bytes but dtype F32 x shape \[8\] needs 32")
def st_dtype_shape_mismatch(env):
    return with_weights(env, st_bytes({"a": st_tensor("F32", [8], 0, 16)}, b"\0" * 16))


@case("safetensors", r"model\.safetensors.*needs \d{30,}")
def st_size_overflow(env):  # 2**64 * 2**64 * 4 bytes wraps to 0 in 64-bit arithmetic: must not pass
    return with_weights(env, st_bytes({"a": st_tensor("F32", [2**64, 2**64], 0, 0)}, b""))


@case("safetensors", r"model\.safetensors.*unknown dtype 'Q4'")
def st_unknown_dtype(env):
    return with_weights(env, st_bytes({"a": st_tensor("Q4", [4], 0, 16)}, b"\0" * 16))


@case("safetensors", r"model\.safetensors.*invalid shape \[-4\]")
def st_negative_dim(env):
    return with_weights(env, st_bytes({"a": st_tensor("F32", [-4], 0, 16)}, b"\0" * 16))


@case("safetensors", r"model\.safetensors.*invalid data_offsets")
def st_offsets_not_ints(env):
    return with_weights(env, st_bytes({"a": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, b"\0" * 16))


@case("safetensors", r"model\.safetensors.*entry for tensor 'a' is not an object")
def st_entry_not_object(env):
    return with_weights(env, st_bytes({"a": 5}, b""))


@case("safetensors", r"model\.safetensors.*has dtype I16; expected BF16, F16 or F32")
def st_integer_weights(env):  # a well-formed file whose embedding is stored as integers
    src = env.ckpt()
    header, data = st_parts(src / "model.safetensors")
    header["model.embed_tokens.weight"]["dtype"] = "I16"  # same width as BF16: byte ranges still agree
    replace(src / "model.safetensors", st_bytes(header, data))
    return convert_args(src, env)


@case(
    "safetensors",
    r"model\.safetensors.*'model\.layers\.0\.mlp\.up_proj\.weight' has shape \[256, 512\] but config\.json implies \[512, 256\]",
)
def st_shape_disagrees_with_config(env):
    src = env.ckpt()
    header, data = st_parts(src / "model.safetensors")
    header["model.layers.0.mlp.up_proj.weight"]["shape"] = [256, 512]  # same bytes, transposed
    replace(src / "model.safetensors", st_bytes(header, data))
    return convert_args(src, env)


@case("safetensors", r"no \.safetensors weights found \(pytorch_model\.bin\)")
def st_only_pickle_weights(env):
    src = env.ckpt()
    (src / "model.safetensors").unlink()
    replace(src / "pytorch_model.bin", b"PK\x03\x04 not loaded: pickles execute code")
    return convert_args(src, env)


# -- sharded checkpoints ----------------------------------------------------------------------


@case("index", r"model-00002-of-00002\.safetensors: file not found")
def idx_missing_shard(env):
    src = env.ckpt()
    split_shards(src)
    (src / "model-00002-of-00002.safetensors").unlink()
    return convert_args(src, env)


@case(
    "index",
    r"model-00001-of-00002\.safetensors: tensor 'model\.ghost\.weight' is listed in the index but missing from this shard",
)
def idx_tensor_not_in_shard(env):
    src = env.ckpt()
    split_shards(src)
    edit_json(
        src / "model.safetensors.index.json",
        lambda d: d["weight_map"].update({"model.ghost.weight": "model-00001-of-00002.safetensors"}),
    )
    return convert_args(src, env)


@case(
    "index", r"model-00002-of-00002\.safetensors: tensor '[\w.]+' also appears in .*model-00001-of-00002\.safetensors"
)
def idx_duplicate_across_shards(env):
    src = env.ckpt()
    split_shards(src, dup=True)
    return convert_args(src, env)


@case("index", r"model\.safetensors\.index\.json: not a valid safetensors index")
def idx_invalid_json(env):
    src = env.ckpt()
    split_shards(src)
    replace(src / "model.safetensors.index.json", "{weight_map: ")
    return convert_args(src, env)


@case("index", r"model\.safetensors\.index\.json: not a valid safetensors index")
def idx_weight_map_not_strings(env):
    src = env.ckpt()
    split_shards(src)
    edit_json(src / "model.safetensors.index.json", lambda d: d["weight_map"].update({"model.norm.weight": 7}))
    return convert_args(src, env)


@case("index", r"shard '\.\./outside\.safetensors' is outside the checkpoint directory")
def idx_shard_outside_directory(env):
    src = env.ckpt()
    split_shards(src)
    replace(env.work / "outside.safetensors", st_bytes({"a": F32x4}, b"\0" * 16))
    edit_json(src / "model.safetensors.index.json", lambda d: d["weight_map"].update({"a": "../outside.safetensors"}))
    return convert_args(src, env)


# -- config.json ------------------------------------------------------------------------------


def with_config(env: Env, fn: Callable[[dict], object]) -> tuple[list[str], Path]:
    src = env.ckpt()
    edit_json(src / "config.json", fn)
    return convert_args(src, env)


def set_layer_count(d: dict, n: int) -> None:
    """A layer count that disagrees with the weights only: the sliding-window layout (when the config lists one)
    is resized with it, so the tensor check, not the layout check, is what refuses."""
    d["num_hidden_layers"] = n
    if isinstance(d.get("layer_types"), list):
        d["layer_types"] = (d["layer_types"] * n)[:n]


@case("config", r"config\.json: config\.json not found")
def cfg_missing(env):
    src = env.ckpt()
    (src / "config.json").unlink()
    return convert_args(src, env)


@case("config", r"config\.json: not valid UTF-8 JSON")
def cfg_invalid_json(env):
    src = env.ckpt()
    replace(src / "config.json", '{"architectures": ["Exaone4ForCausalLM"],')
    return convert_args(src, env)


@case("config", r"config\.json: top level must be a JSON object")
def cfg_not_object(env):
    src = env.ckpt()
    replace(src / "config.json", '["Exaone4ForCausalLM"]')
    return convert_args(src, env)


@case(
    "config",
    r"architecture 'MistralForCausalLM' is not supported; supported: ExaoneForCausalLM, Exaone4ForCausalLM, ExaoneMoEForCausalLM, ExaoneMoeForCausalLM, Exaone4_5_ForConditionalGeneration, LlamaForCausalLM",
)
def cfg_unsupported_architecture(env):
    return with_config(env, lambda d: d.update(architectures=["MistralForCausalLM"]))


@case("config", r"architecture None is not supported; supported: ExaoneForCausalLM")
def cfg_no_architectures(env):
    return with_config(env, lambda d: d.pop("architectures"))


@case("config", r"config\.json: required key 'hidden_size' is missing")
def cfg_missing_key(env):
    return with_config(env, lambda d: d.pop("hidden_size"))


@case("config", r"config\.json: key 'hidden_size' must be an integer, got '256'")
def cfg_mistyped_key_string(env):
    return with_config(env, lambda d: d.update(hidden_size="256"))


@case("config", r"config\.json: key 'num_hidden_layers' must be an integer, got True")
def cfg_mistyped_key_bool(env):
    return with_config(env, lambda d: d.update(num_hidden_layers=True))


@case("config", r"config\.json: key 'num_attention_heads' must be an integer, got 4\.5")
def cfg_mistyped_key_float(env):
    return with_config(env, lambda d: d.update(num_attention_heads=4.5))


@case("config", r"config\.json: key 'num_hidden_layers' must be positive, got 0")
def cfg_zero_layers(env):
    return with_config(env, lambda d: d.update(num_hidden_layers=0))


@case("config", r"key 'rms_norm_eps' must be a number")
def cfg_mistyped_eps(env):
    return with_config(env, lambda d: d.update(rms_norm_eps=[1e-5]))


@case(
    "config",
    r"tensor 'model\.embed_tokens\.weight' has shape \[2048, 256\] but config\.json implies \[1000000000000, 256\]",
)
def cfg_huge_vocab(env):  # a size that would need terabytes if anything were allocated from it
    return with_config(env, lambda d: d.update(vocab_size=10**12))


@case("config", r"'model\.embed_tokens\.weight' has shape \[2048, 256\] but config\.json implies \[2048, 128\]")
def cfg_hidden_size_disagrees(env):
    return with_config(env, lambda d: d.update(hidden_size=128))


@case("config", r"tensor 'model\.layers\.4\.[\w.]+' is missing from the checkpoint")
def cfg_more_layers_than_weights(env):
    return with_config(env, lambda d: set_layer_count(d, 5))


@case("config", r"unexpected tensor 'model\.layers\.3\.[\w.]+'")
def cfg_fewer_layers_than_weights(env):
    return with_config(env, lambda d: set_layer_count(d, 3))


@case("config", r"'layer_types' must list 4 entries")
def cfg_layer_types_wrong_length(env):
    return with_config(env, lambda d: d.update(sliding_window=8, layer_types=["sliding_attention"] * 3))


@case("config", r"rope_scaling type 'yarn' is not supported")
def cfg_unsupported_rope(env):
    return with_config(env, lambda d: d.update(rope_scaling={"rope_type": "yarn", "factor": 4.0}))


@case("config", r"quantized checkpoints \(bitsandbytes\) are not supported")
def cfg_quantized_checkpoint(env):
    return with_config(
        env, lambda d: d.update(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True})
    )


@case("config", r"declares GPTQ but no tensor ends in '.qweight'")
def cfg_gptq_on_float_weights(env):
    return with_config(env, lambda d: d.update(quantization_config={"quant_method": "gptq", "bits": 4}))


@case("config", r"num_attention_heads 4 is not a multiple of num_key_value_heads 3")
def cfg_bad_gqa(env):
    return with_config(env, lambda d: d.update(num_key_value_heads=3))


# -- tokenizer --------------------------------------------------------------------------------


def with_tokenizer(env: Env, fname: str, fn: Callable[[dict], object]) -> tuple[list[str], Path]:
    src = env.ckpt()
    edit_json(src / fname, fn)
    return convert_args(src, env)


@case("tokenizer", r"no tokenizer found \(missing tokenizer\.json, vocab\.json, merges\.txt\)")
def tok_missing_files(env):
    src = env.ckpt()
    (src / "tokenizer.json").unlink()
    return convert_args(src, env)


@case("tokenizer", r"tokenizer\.json: not valid UTF-8 JSON")
def tok_invalid_json(env):
    src = env.ckpt()
    replace(src / "tokenizer.json", b'{"model": {"type": "BPE", "vocab": {"\xff')
    return convert_args(src, env)


@case("tokenizer", r"tokenizer\.json: only byte-level BPE tokenizers are supported")
def tok_not_bpe(env):
    return with_tokenizer(env, "tokenizer.json", lambda d: d["model"].update(type="WordPiece"))


@case("tokenizer", r"tokenizer\.json: only byte-level BPE tokenizers are supported")
def tok_top_level_list(env):
    src = env.ckpt()
    replace(src / "tokenizer.json", "[1, 2]")
    return convert_args(src, env)


@case("tokenizer", r"tokenizer has token id 5000 but config\.json says vocab_size 2048")
def tok_vocab_larger_than_config(env):
    return with_tokenizer(env, "tokenizer.json", lambda d: d["model"]["vocab"].update({"zzzz": 5000}))


@case("tokenizer", r"tokenizer\.json: token 'zzzz' has id 'x'")
def tok_vocab_id_not_int(env):
    return with_tokenizer(env, "tokenizer.json", lambda d: d["model"]["vocab"].update({"zzzz": "x"}))


@case("tokenizer", r"tokenizer\.json: token 'zzzz' has id -5")
def tok_vocab_id_negative(env):
    return with_tokenizer(env, "tokenizer.json", lambda d: d["model"]["vocab"].update({"zzzz": -5}))


@case("tokenizer", r"tokenizer\.json: merge 7 \(entry 0\) is not 'left right' or \[left, right\]")
def tok_merges_wrong_type(env):
    return with_tokenizer(env, "tokenizer.json", lambda d: d["model"]["merges"].insert(0, 7))


@case("tokenizer", r"tokenizer\.json: added token .* needs an integer 'id' and a string 'content'")
def tok_added_token_bad_id(env):
    return with_tokenizer(env, "tokenizer.json", lambda d: d["added_tokens"].append({"id": "x", "content": "<x>"}))


@case("tokenizer", r"tokenizer\.json: added token .* needs an integer 'id' and a string 'content'")
def tok_added_token_no_content(env):
    return with_tokenizer(env, "tokenizer.json", lambda d: d["added_tokens"].append({"id": 1500}))


@case("tokenizer", r"tokenizer_config\.json: added token .* needs an integer 'id' and a string 'content'")
def tok_config_added_decoder_bad_key(env):
    return with_tokenizer(
        env, "tokenizer_config.json", lambda d: d["added_tokens_decoder"].update({"one": {"content": "x"}})
    )


@case("tokenizer", r"tokenizer_config\.json: top level must be a JSON object")
def tok_config_not_object(env):
    src = env.ckpt()
    replace(src / "tokenizer_config.json", '"just a string"')
    return convert_args(src, env)


@case("tokenizer", r"eos token id 99999 is outside the vocabulary of 2048")
def tok_eos_outside_vocab(env):
    src = env.ckpt()
    edit_json(src / "tokenizer_config.json", lambda d: d.update(eos_token="<no such token>"))
    edit_json(src / "config.json", lambda d: d.update(eos_token_id=99999))
    return convert_args(src, env)


@case("tokenizer", r"merges\.txt: not valid UTF-8")
def tok_merges_txt_not_utf8(env):
    src = env.ckpt()
    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    (src / "tokenizer.json").unlink()
    replace(src / "vocab.json", json.dumps(tj["model"]["vocab"]))
    replace(src / "merges.txt", b"#version: 0.2\n\xc4 \xa0\xff\n")
    return convert_args(src, env)


# -- weights ----------------------------------------------------------------------------------


@case(
    "weights",
    r"model\.safetensors: tensor 'model\.layers\.1\.self_attn\.q_proj\.weight' contains NaN or infinity.*--allow-nonfinite",
)
def w_nan_bf16(env):
    src = env.ckpt()
    poke_value(src, "model.layers.1.self_attn.q_proj.weight", 1000, 0x7FC0)  # BF16 quiet NaN
    return convert_args(src, env)


@case("weights", r"tensor 'model\.embed_tokens\.weight' contains NaN or infinity")
def w_inf_to_f16(env):
    src = env.ckpt()
    poke_value(src, "model.embed_tokens.weight", 77, 0xFF80)  # BF16 -inf, through the lookup-table path
    return convert_args(src, env, "--outtype", "f16")


@case("weights", r"tensor 'model\.norm\.weight' contains NaN or infinity")
def w_nan_in_norm_q8(env):
    src = env.ckpt()
    poke_value(src, "model.norm.weight", 3, 0x7F81)  # a signalling NaN in a 1-D tensor
    return convert_args(src, env, "--outtype", "q8_0")


@case("weights", r"tensor 'model\.layers\.3\.mlp\.down_proj\.weight' contains NaN or infinity")
def w_inf_quantized(env):
    src = env.ckpt()
    poke_value(src, "model.layers.3.mlp.down_proj.weight", 5, 0x7F80)
    return convert_args(src, env, "--outtype", "q4_k_m")


# -- chat template ----------------------------------------------------------------------------


def with_template(env: Env, text: str | bytes) -> tuple[list[str], Path]:
    src = env.ckpt()
    replace(src / "chat_template.jinja", text)
    return convert_args(src, env)


@case("template", r"chat_template\.jinja: chat template has a Jinja syntax error at line 1")
def tpl_syntax_error(env):
    return with_template(env, "{% if messages %}{{ messages[0] }")


@case("template", r"chat_template\.jinja: chat template has a Jinja syntax error")
def tpl_unclosed_block(env):
    return with_template(env, "{% for m in messages %}{{ m.content }}")


@case("template", r"chat_template\.jinja: chat template .*(sandbox|unsafe)")
def tpl_escape_class_mro(env):
    return with_template(env, "{{ ''.__class__.__mro__[1].__subclasses__() }}")


@case("template", r"chat_template\.jinja: chat template .*(sandbox|unsafe)")
def tpl_escape_in_dead_branch(env):  # never rendered with ordinary messages: must be refused all the same
    return with_template(
        env,
        "{% if messages|length > 99 %}{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}{% endif %}hi",
    )


@case("template", r"chat_template\.jinja: chat template .*(sandbox|unsafe)")
def tpl_escape_getitem(env):
    return with_template(env, "{{ messages['__class__']['__base__'] }}")


@case("template", r"chat_template\.jinja: chat template .*(sandbox|unsafe)")
def tpl_escape_attr_filter(env):
    return with_template(env, "{{ (messages|attr('__class__')).__subclasses__() }}")


@case("template", r"chat_template\.jinja: chat template .*(sandbox|unsafe)")
def tpl_escape_built_name(env):  # the attribute name is computed at render time: the sandbox stops it
    return with_template(env, "{% set n = '_' ~ '_class_' ~ '_' %}{{ (messages|attr(n)).mro() }}")


@case("template", r"chat_template\.jinja: chat template .*more than the 1,000,000 allowed")
def tpl_too_long(env):
    return with_template(env, "x" * 1_000_001)


@case("template", r"chat_template\.jinja: chat template was stopped")
def tpl_output_bomb(env):
    return with_template(env, "{{ 'ab' * 900000000 }}")


@case("template", r"chat_template\.jinja: chat template was stopped at its memory bound of 256 MiB for one render")
def tpl_accumulated_values(env):  # each value is under any per-value cap; together they grow without end
    return with_template(
        env,
        "{% set big = 'x' * 999990 %}{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
        "{% set ns.l = ns.l + [big ~ i] %}{% endfor %}{{ ns.l | length }}",
    )


@case("template", r"chat_template\.jinja: not valid UTF-8")
def tpl_not_utf8(env):
    return with_template(env, b"{{ bos_token }}\xff\xfe")


@case("template", r"tokenizer_config\.json: chat template has a Jinja syntax error")
def tpl_in_tokenizer_config(env):
    src = env.ckpt()
    (src / "chat_template.jinja").unlink()
    edit_json(src / "tokenizer_config.json", lambda d: d.update(chat_template="{% for %}"))
    return convert_args(src, env)


# -- GGUF inputs (inspect, quantize, validate) ------------------------------------------------


def inspect_args(env: Env, data: bytes) -> tuple[list[str], Path]:
    p = env.gguf(data)
    return ["inspect", str(p)], p


@case("gguf", r"in\.gguf: bad magic .* this is not a GGUF file")
def g_not_gguf(env):
    return inspect_args(env, b"PK\x03\x04" + b"\0" * 60)


@case("gguf", r"in\.gguf: the file is only 0 bytes, too small to be a GGUF file")
def g_empty_file(env):
    return inspect_args(env, b"")


@case("gguf", r"in\.gguf: the file has unsupported GGUF version 99")
def g_unsupported_version(env):
    return inspect_args(env, gguf_bytes(version=99))


@case("gguf", r"in\.gguf: header claims 4611686018427387904 tensors but only \d+ bytes follow")
def g_huge_tensor_count(env):
    return inspect_args(env, gguf_bytes(n_tensors=2**62))


@case("gguf", r"in\.gguf: header claims 9223372036854775809 key-value pairs but only \d+ bytes follow")
def g_huge_kv_count(env):
    return inspect_args(env, gguf_bytes(n_kv=2**63 + 1))


@case("gguf", r"in\.gguf: key 0 needs 9223372036854775808 bytes at offset 32 but only \d+ remain")
def g_huge_string_length(env):
    bad = struct.pack("<Q", 2**63) + b"general.architecture"
    return inspect_args(env, gguf_bytes(kvs=[bad]))


@case("gguf", r"in\.gguf: array 'test\.array' needs \d+ bytes at offset \d+ but only \d+ remain")
def g_huge_array_count(env):
    arr = g_kv("test.array", GGUF_ARRAY, struct.pack("<IQ", GGUF_U32, 2**61))
    return inspect_args(env, gguf_bytes(kvs=[ARCH_KV, arr]))


@case("gguf", r"in\.gguf: key 'general\.architecture' appears twice")
def g_duplicate_key(env):
    return inspect_args(env, gguf_bytes(kvs=[ARCH_KV, ARCH_KV]))


@case("gguf", r"in\.gguf: tensor name 'a\.weight' appears twice")
def g_duplicate_tensor(env):
    return inspect_args(env, gguf_bytes(tensors=[T_A, g_tensor("a.weight", [8], 0, 32)]))


@case("gguf", r"in\.gguf: general\.alignment is 3, not a power of two")
def g_bad_alignment(env):
    return inspect_args(env, gguf_bytes(kvs=[ARCH_KV, g_kv("general.alignment", GGUF_U32, struct.pack("<I", 3))]))


@case("gguf", r"in\.gguf: the value type of key 'test\.x' is 99, not a known GGUF value type")
def g_unknown_value_type(env):
    return inspect_args(env, gguf_bytes(kvs=[ARCH_KV, g_kv("test.x", 99, b"\0" * 8)]))


@case("gguf", r"in\.gguf: tensor 'a\.weight' has unknown ggml type 99")
def g_unknown_tensor_type(env):
    return inspect_args(env, gguf_bytes(tensors=[g_tensor("a.weight", [8], 99, 0)]))


@case("gguf", r"in\.gguf: tensor 'a\.weight' has 5 dimensions, more than the 4")
def g_too_many_dims(env):
    return inspect_args(env, gguf_bytes(tensors=[g_tensor("a.weight", [1, 1, 1, 1, 8], 0, 0)]))


@case("gguf", r"in\.gguf: tensor 'a\.weight' has shape \[\d+, \d+, 4\] whose element count overflows int64")
def g_dimension_overflow(env):
    return inspect_args(env, gguf_bytes(tensors=[g_tensor("a.weight", [2**62, 2**62, 4], 0, 0)]))


@case("gguf", r"in\.gguf: tensor 'b\.weight' has data offset 33, not a multiple of the alignment 32")
def g_misaligned_tensor_offset(env):
    return inspect_args(env, gguf_bytes(tensors=[T_A, g_tensor("b.weight", [8], 0, 33)]))


@case("gguf", r"in\.gguf: tensor 'b\.weight' data \(32 bytes at offset \d+\) runs past the end of the file")
def g_tensor_data_past_eof(env):
    return inspect_args(env, gguf_bytes(data=b"\0" * 40))


@case("gguf", r"in\.gguf: key 1 is not valid UTF-8")
def g_key_not_utf8(env):
    return inspect_args(env, gguf_bytes(kvs=[ARCH_KV, g_str_kv(b"bad.\xff\xfe", "x")]))


@case("gguf", r"in\.gguf: tensor '[\w.]+' data \(\d+ bytes at offset \d+\) runs past the end of the file")
def g_truncated_real_file(env):
    data = env.base_gguf.read_bytes()
    return inspect_args(env, data[: len(data) // 2])


@case("gguf", r"in\.gguf: tensor '[\w.]+' data \(\d+ bytes at offset \d+\) runs past the end of the file")
def g_quantize_truncated(env):
    data = env.base_gguf.read_bytes()
    p = env.gguf(data[:-4096])
    return ["quantize", str(p), str(env.out / "q.gguf"), "q8_0"], p


def gguf_with_value(env: Env, tensor: str, index: int, bits: int) -> Path:
    """The base GGUF with element `index` of `tensor` set to the raw bit pattern `bits` (BF16 or F32)."""
    from exaone_gguf.gguf_io import read_gguf

    t = next(t for t in read_gguf(env.base_gguf).tensors if t.name == tensor)
    width = {"BF16": 2, "F32": 4}[t.type_name]
    data = bytearray(env.base_gguf.read_bytes())
    data[t.offset + index * width : t.offset + (index + 1) * width] = bits.to_bytes(width, "little")
    return env.gguf(bytes(data))


@case("gguf", r"in\.gguf: tensor 'blk\.1\.attn_q\.weight' contains NaN or infinity.*--allow-nonfinite")
def g_quantize_nan_bf16(env):
    p = gguf_with_value(env, "blk.1.attn_q.weight", 100, 0x7FC0)  # BF16 quiet NaN
    return ["quantize", str(p), str(env.out / "q.gguf"), "q4_k_m"], p


@case("gguf", r"in\.gguf: tensor 'output_norm\.weight' contains NaN or infinity")
def g_quantize_inf_in_f32_norm(env):
    p = gguf_with_value(env, "output_norm.weight", 2, 0xFF800000)  # F32 -inf in a tensor kept as it is
    return ["quantize", str(p), str(env.out / "q.gguf"), "q8_0"], p


@case("gguf", r"in\.gguf: general\.architecture is missing")
def g_quantize_no_architecture(env):
    p = env.gguf(gguf_bytes(kvs=[]))
    return ["quantize", str(p), str(env.out / "q.gguf"), "q8_0"], p


@case("gguf", r"in\.gguf: tensor '[\w.]+' data \(\d+ bytes at offset \d+\) runs past the end of the file")
def g_validate_truncated(env):
    data = env.base_gguf.read_bytes()
    p = env.gguf(data[: len(data) // 3])
    return ["validate", str(p), "--json", str(env.out / "report.json")], p


# -- output paths -----------------------------------------------------------------------------


@case("output", r"model\.gguf: lies inside the source directory")
def out_inside_source(env):
    src = env.ckpt()
    return ["convert", str(src), "-o", str(src / "model.gguf")], src


@case("output", r"lies inside the source directory")
def out_symlink_into_source(env):
    src = env.ckpt()
    (env.out / "model.gguf").symlink_to(src / "config.json")
    args, _ = convert_args(src, env, "--force")
    return args, src


@case("output", r"model\.gguf: already exists; pass --force")
def out_exists_without_force(env):
    src = env.ckpt()
    replace(env.out / "model.gguf", b"keep me")
    return convert_args(src, env)


@case("output", r"the directory .* does not exist")
def out_directory_missing(env):
    src = env.ckpt()
    return ["convert", str(src), "-o", str(env.out / "no" / "such" / "model.gguf")], src


@case("output", r"src: lies inside the source directory")
def out_directory_is_source(env):  # a directory output (publish layout) must not be the checkpoint itself
    src = env.ckpt()
    return ["convert", str(src), "-o", str(src)], src


@case("output", r"in\.gguf: is the input file")
def out_same_as_input(env):
    p = env.gguf()
    return ["quantize", str(p), str(p), "q8_0", "--force"], p


@case("output", r"is the input file")
def out_hard_link_to_input(env):
    p = env.gguf()
    os.link(p, env.work / "alias.gguf")
    return ["quantize", str(p), str(env.work / "alias.gguf"), "q8_0", "--force"], p


@case("output", r"is the input file")
def out_symlink_to_input(env):
    p = env.gguf()
    (env.work / "alias.gguf").symlink_to(p)
    return ["quantize", str(p), str(env.work / "alias.gguf"), "q8_0", "--force"], p


@case("output", r"q\.gguf: already exists; pass --force")
def out_quantize_exists(env):
    p = env.gguf()
    replace(env.out / "q.gguf", b"keep me")
    return ["quantize", str(p), str(env.out / "q.gguf"), "q8_0"], p


@case("output", r"Unknown quantization type 'q9_9'; use one of")
def out_unknown_quant_type(env):
    p = env.gguf()
    return ["quantize", str(p), str(env.out / "q.gguf"), "q9_9"], p


@case("output", r"model\.gguf: already exists; pass --force")
def out_hard_link_to_source_weights(env):
    src = env.ckpt()
    os.link(src / "model.safetensors", env.out / "model.gguf")
    return convert_args(src, env)


# -- paths that are not what they claim -------------------------------------------------------


@case("gguf", r"(directory|not a regular file|Is a directory)")
def g_inspect_directory(env):
    (env.work / "dir.gguf").mkdir()
    return ["inspect", str(env.work / "dir.gguf")], env.work / "dir.gguf"


@case("gguf", r"missing\.gguf.*(not found|No such file|does not exist)")
def g_inspect_missing_file(env):
    return ["inspect", str(env.work / "missing.gguf")], env.out


@case("config", r"not a directory")
def cfg_source_is_a_file(env):
    p = env.gguf()
    return ["convert", str(p), "-o", str(env.out / "model.gguf")], p


@case("config", r"config\.json: required key 'hidden_size' is missing")
def cfg_validate_reference_broken(env):  # validate refuses a bad --reference before loading llama.cpp
    src = env.ckpt()
    edit_json(src / "config.json", lambda d: d.pop("hidden_size"))
    p = env.gguf()
    return ["validate", str(p), "--reference", str(src), "--json", str(env.out / "report.json")], src
