"""GPTQ, FP8 and compressed-tensors sources (issue 23): tiny EXAONE 4.0 checkpoints quantized and packed here, from
each format's documented layout (reference/llama-cpp-exaone.md section 9), by code that shares nothing with the
converter's readers (torch for float8, plain shifts for packing). Checked:

- the F32 file equals a dequantization written here and llama.cpp's own converter's F32 file, bit for bit;
- Q4_0 / Q4_1 / Q8_0 keep the codes where the layout allows (decoded blocks equal the source's codes and scales),
  and act-order / FP8 say they are rounded once;
- validate checks a file against the exact dequantization (an honest file passes, altered codes fail);
- what a config declares that is not handled is refused in one sentence, exit 2, nothing written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import fixture_path
from gguf import GGMLQuantizationType as T
from helpers import decode_q4_1
from safetensors.torch import save_file
from test_llamacpp_files import llama_convert, tensor_bytes
from typer.testing import CliRunner

from exaone_gguf.checkpoint.block_codes import decode_q4_0, decode_q8_0
from exaone_gguf.checkpoint.grouped import GroupedTensor, pack_bits, unpack_bits
from exaone_gguf.checkpoint.safetensors import SafetensorsFile
from exaone_gguf.checkpoint.spec import read_config
from exaone_gguf.cli import app
from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.errors import InputError
from exaone_gguf.families import family_for, load_checkpoint, parse_config
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.validate import validate

pytestmark = pytest.mark.slow  # torch / transformers

TOKENIZER = "exaone-4.0-1.2B"  # llama.cpp's converter knows this pre-tokenizer by hash
CT_FIXTURE = "exaone-4.0-1.2B-w4a16-compressed-tensors"


# ---------------------------------------------------------------------------------------------
# Packers and quantizers written from the documented layouts


def pack_along(codes: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Unsigned codes -> int32 words along `axis`, value j of a word in bits [j*bits, (j+1)*bits)."""
    c = np.moveaxis(codes.astype(np.int64), axis, 0)
    per = 32 // bits
    c = np.concatenate([c, np.zeros((-len(c) % per, *c.shape[1:]), np.int64)])
    words = np.zeros((len(c) // per, *c.shape[1:]), np.int64)
    for j in range(per):
        words += c[j::per] << (bits * j)
    return np.moveaxis(words.astype(np.uint32).view(np.int32), 0, axis)


@dataclass
class Layer:
    """One quantized Linear: codes q [N, K], zeros z and scales s [N, G], g_idx [K]: W = (q - z[g]) * s[g]."""

    q: np.ndarray
    z: np.ndarray
    s: np.ndarray  # float32 holding fp16 / bf16 values
    g: np.ndarray

    def dequant(self) -> np.ndarray:
        return ((self.q.astype(np.float64) - self.z[:, self.g]) * self.s[:, self.g].astype(np.float64)).astype(
            np.float32
        )


def quantize_groups(w, bits, group, sym, act_order, rng, scale_dtype=torch.float16, min_zero=0) -> Layer:
    n, k = w.shape
    g = np.arange(k) // group
    if act_order:  # inputs taken in a random "activation order", grouped in that order
        g = np.empty(k, np.int64)
        g[rng.permutation(k)] = np.arange(k) // group
    maxq = (1 << bits) - 1
    ng = k // group
    z, s = np.zeros((n, ng)), np.zeros((n, ng), np.float32)
    q = np.zeros((n, k), np.int64)
    for j in range(ng):
        cols = g == j
        x = w[:, cols]
        lo, hi = np.minimum(x.min(1), 0), np.maximum(x.max(1), 0)
        if sym:
            scale, zero = 2 * np.maximum(-lo, hi) / maxq, np.full(n, (maxq + 1) // 2)
        else:
            scale = (hi - lo) / maxq
        scale = torch.tensor(np.maximum(scale, 1e-6)).to(scale_dtype).float().numpy()
        if not sym:
            zero = np.clip(np.round(-lo / scale), min_zero, maxq)
        q[:, cols] = np.clip(np.round(x / scale[:, None]) + zero[:, None], 0, maxq)
        z[:, j], s[:, j] = zero, scale
    return Layer(q, z.astype(np.int64), s, g)


# ---------------------------------------------------------------------------------------------
# Tiny quantized checkpoints (from tiny EXAONE 4.0 with the real tokenizer)


@dataclass(frozen=True)
class Source:
    name: str
    method: str  # gptq | fp8 | ct
    bits: int = 4
    sym: bool = True
    act_order: bool = False
    group: int = 32
    v1: bool = True  # GPTQ checkpoint_format "gptq": zeros stored minus one
    ct_format: str = "pack-quantized"  # or float-quantized
    block: tuple[int, int] = (48, 40)  # FP8 weight_block_size: by default not dividing the tiny shapes (cut back)


SOURCES = {
    s.name: s
    for s in (
        Source("gptq-4-sym", "gptq"),
        Source("gptq-4-asym-actorder", "gptq", sym=False, act_order=True),
        Source("gptq-4-sym-actorder", "gptq", act_order=True, group=64),
        Source("gptq-8-sym", "gptq", bits=8),
        Source("gptq-8-sym-actorder", "gptq", bits=8, act_order=True),
        Source("gptq-8-asym-v2", "gptq", bits=8, sym=False, v1=False, group=64),
        Source("gptq-4-asym-v2", "gptq", sym=False, v1=False),
        Source("fp8-e4m3-block", "fp8"),
        Source("fp8-e4m3-128", "fp8", block=(128, 128)),  # transformers needs whole blocks
        Source("ct-int4-sym", "ct", group=128),
        Source("ct-int4-asym", "ct", sym=False, group=64),
        Source("ct-int8-channel", "ct", bits=8, group=0),
        Source("ct-int8-group", "ct", bits=8, group=64),
        Source("ct-fp8-channel", "ct", bits=8, group=0, ct_format="float-quantized"),
    )
}
QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantization_config(src: Source) -> dict:
    if src.method == "gptq":
        return {
            "bits": src.bits,
            "group_size": src.group,
            "desc_act": src.act_order,
            "sym": src.sym,
            "quant_method": "gptq",
            "checkpoint_format": "gptq" if src.v1 else "gptq_v2",
            "damp_percent": 0.01,
            "true_sequential": True,
            "static_groups": False,
        }
    if src.method == "fp8":
        return {
            "quant_method": "fp8",
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "weight_block_size": list(src.block),
        }
    qc = read_config(fixture_path(CT_FIXTURE, "config.json"))["quantization_config"]  # a real one, adapted
    w = qc["config_groups"]["group_0"]["weights"]
    w.update(num_bits=src.bits, symmetric=src.sym, group_size=src.group or None)
    w["strategy"] = "group" if src.group else "channel"
    if src.ct_format == "float-quantized":
        w.update(type="float", actorder=None)
    qc["format"] = qc["config_groups"]["group_0"]["format"] = src.ct_format
    return qc


def quantize_layer(src: Source, w: np.ndarray, rng) -> tuple[dict[str, torch.Tensor], np.ndarray, Layer | None]:
    """The stored tensors of one Linear, its exact dequantization (float32) and its codes."""
    n, k = w.shape
    if src.method == "fp8" or src.ct_format == "float-quantized":
        b0, b1 = src.block if src.method == "fp8" else (1, k)
        nb0, nb1 = -(-n // b0), -(-k // b1)
        amax = np.zeros((nb0, nb1), np.float32)
        for i in range(nb0):
            for j in range(nb1):
                amax[i, j] = np.abs(w[i * b0 : (i + 1) * b0, j * b1 : (j + 1) * b1]).max()
        scale = torch.tensor(np.maximum(amax, 1e-6) / 448.0)
        if src.method == "ct":
            scale = scale.to(torch.bfloat16)
        full = scale.float().repeat_interleave(b0, 0).repeat_interleave(b1, 1)[:n, :k]
        w8 = (torch.tensor(w) / full).to(torch.float8_e4m3fn)
        deq = (w8.float() * full).numpy()
        key = "weight_scale_inv" if src.method == "fp8" else "weight_scale"
        return {"weight": w8, key: scale}, deq, None
    if src.method == "gptq":
        layer = quantize_groups(w, src.bits, src.group, src.sym, src.act_order, rng, min_zero=1 if src.v1 else 0)
        maxq = (1 << src.bits) - 1
        stored_z = (layer.z - src.v1) & maxq
        g_idx = torch.tensor(layer.g.astype(np.int32))
        out = {
            "qweight": torch.tensor(pack_along(layer.q.T, src.bits, 0)),  # [K*b/32, N], along the inputs
            "qzeros": torch.tensor(pack_along(stored_z.T, src.bits, 1)),  # [G, N*b/32], along the outputs
            "scales": torch.tensor(layer.s.T.copy()).half(),
            "g_idx": g_idx,
        }
        return out, layer.dequant(), layer
    # compressed-tensors pack-quantized: codes stored unsigned (q + 2^(b-1) for signed q); zero points alike
    group = src.group or k
    layer = quantize_groups(w, src.bits, group, src.sym, False, rng, torch.bfloat16)
    out = {
        "weight_packed": torch.tensor(pack_along(layer.q, src.bits, 1)),  # [N, K*b/32], along the inputs
        "weight_scale": torch.tensor(layer.s).to(torch.bfloat16),
        "weight_shape": torch.tensor([n, k]),
    }
    if not src.sym:
        out["weight_zero_point"] = torch.tensor(pack_along(layer.z, src.bits, 0))  # along the outputs
    return out, layer.dequant(), layer


def make_source(src: Source, float_dir, out) -> tuple[dict[str, np.ndarray], dict[str, Layer]]:
    """Write the quantized checkpoint; returns every quantized `.weight`'s exact dequantization and codes."""
    rng = np.random.default_rng(23)
    out.mkdir()
    for f in float_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    cfg = json.loads((float_dir / "config.json").read_text())
    cfg["quantization_config"] = quantization_config(src)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    stored, exact, codes = {}, {}, {}
    for name, h in SafetensorsFile(float_dir / "model.safetensors").tensors.items():
        t = torch.tensor(h.raw().copy()).view(torch.bfloat16) if h.dtype == "BF16" else torch.tensor(h.raw().copy())
        if not any(f".{p}.weight" in name for p in QUANTIZED):
            stored[name] = t
            continue
        prefix = name.removesuffix(".weight")
        parts, exact[name], layer = quantize_layer(src, t.float().numpy(), rng)
        codes[name] = layer
        stored.update({f"{prefix}.{p}": v.contiguous() for p, v in parts.items()})
    save_file(stored, str(out / "model.safetensors"), metadata={"format": "pt"})
    return exact, codes


@pytest.fixture(scope="module")
def float_dir(tiny_dir):
    return tiny_dir("exaone4", TOKENIZER)


@pytest.fixture(scope="module")
def source(float_dir, tmp_path_factory):
    root, made = tmp_path_factory.mktemp("quantized"), {}

    def get(name: str):
        if name not in made:
            d = root / name
            made[name] = (d, *make_source(SOURCES[name], float_dir, d))
        return made[name]

    return get


def gguf_tensors(path, ckpt):
    """{HF name: (GGUF tensor info, the file)} for the checkpoint's weights."""
    f = read_gguf(path)
    return f, {m.hf_name: f.tensor(m.gguf_name) for m in family_for(ckpt.spec).tensor_map(ckpt.spec)}


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_bits_is_the_documented_layout(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, (6, 40))
    for axis in (0, 1):
        ours = pack_bits(codes, bits, axis)
        assert np.array_equal(ours, pack_along(codes, bits, axis))
        assert np.array_equal(unpack_bits(ours, bits, codes.shape[axis], axis), codes)
    word = int(pack_along(codes, bits, 1)[2, 1]) & 0xFFFFFFFF  # value j of word 1 is input 32/bits + j
    per = 32 // bits
    assert [(word >> (bits * j)) & ((1 << bits) - 1) for j in range(per)] == codes[2, per : 2 * per].tolist()


@pytest.mark.parametrize("name", list(SOURCES))
def test_f32_equals_the_exact_dequantization(name, source, tmp_path):
    d, exact, _ = source(name)
    ckpt = load_checkpoint(d)
    ours = convert(d, tmp_path / "ours.gguf", ConvertOptions(outtype="f32")).output
    f, infos = gguf_tensors(ours, ckpt)
    for hf_name, want in exact.items():
        got = f.tensor_f32(infos[hf_name].name).reshape(want.shape)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), hf_name  # bit for bit
    assert len(exact) == 7 * ckpt.spec.num_layers


# Each layout variant once (llama.cpp's converter takes ~45 s a run on the shared machine): GPTQ v1 symmetric,
# v1 asymmetric act-order, v2 8-bit; FP8 with cut-back blocks; compressed-tensors with zero points, int8 by group,
# float-quantized.
LLAMA_CPP_CASES = [
    "gptq-4-sym",
    "gptq-4-asym-actorder",
    "gptq-8-asym-v2",
    "fp8-e4m3-block",
    "ct-int4-asym",
    "ct-int8-group",  # llama.cpp's converter asserts strategy "group" for pack-quantized (no channel)
    "ct-fp8-channel",
]


@pytest.mark.parametrize("name", LLAMA_CPP_CASES)
def test_f32_equals_llama_cpp_converter(name, source, llama_tools, tmp_path):
    d, _, _ = source(name)
    ours = convert(d, tmp_path / "ours.gguf", ConvertOptions(outtype="f32")).output
    lc = llama_convert(llama_tools, d, tmp_path / "llama.gguf", "f32")
    a, b = tensor_bytes(ours), tensor_bytes(lc)
    assert sorted(a) == sorted(b)
    # rope_freqs aside (llama.cpp computes the llama3 factors in float32, we in float64: test_llamacpp_files)
    assert [n for n in a if a[n] != b[n]] in ([], ["rope_freqs.weight"])


KEPT = [
    ("gptq-4-sym", "q4_0"),
    ("gptq-4-sym", "q8_0"),
    ("gptq-4-asym-v2", "q4_1"),
    ("gptq-8-sym", "q8_0"),
    ("gptq-4-asym-v2", "q8_0"),  # 4-bit asymmetric: q - zero within int8
    ("ct-int4-sym", "q4_0"),
    ("ct-int4-asym", "q4_1"),
    ("ct-int8-channel", "q8_0"),
]


@pytest.mark.parametrize("name, outtype", KEPT)
def test_block_types_keep_the_codes(name, outtype, source, tmp_path):
    d, exact, codes = source(name)
    ckpt = load_checkpoint(d)
    res = convert(d, tmp_path / "kept.gguf", ConvertOptions(outtype=outtype))
    qtype = T[outtype.upper()]
    f, infos = gguf_tensors(res.output, ckpt)
    for hf_name, layer in codes.items():
        info = infos[hf_name]
        assert info.tensor_type == qtype, hf_name
        rows = np.asarray(f.tensor_bytes(info)).reshape(layer.q.shape[0], -1)
        per = layer.q.shape[1] // layer.s.shape[1] // 32  # blocks per group
        s = np.repeat(layer.s, per, axis=1)
        if qtype == T.Q4_0:
            q, d_ = decode_q4_0(rows, layer.q.shape[1])
            assert np.array_equal(q, layer.q) and np.all(layer.z == 8)
        elif qtype == T.Q4_1:
            q, _ = decode_q4_1(rows, layer.q.shape[1])
            assert np.array_equal(q, layer.q)
            d_ = np.asarray(rows.reshape(len(rows), -1, 20)[..., :2]).copy().view("<f2")[..., 0].astype(np.float32)
        else:
            q, d_ = decode_q8_0(rows, layer.q.shape[1])
            assert np.array_equal(q, layer.q - layer.z[:, layer.g])
        assert np.array_equal(d_, s), hf_name  # the block scale is the group's scale
    fmt = "GPTQ" if name.startswith("gptq") else "compressed-tensors"
    assert f"{fmt}: 28 tensor(s) keep their codes exactly as {qtype.name}" in res.notes
    report = validate(res.output, d, max_tokens=64)
    tensors = next(c for c in report.checks if c.name == "tensors: match source")
    assert (
        tensors.status == "pass" and f": {len(infos)}/{len(infos)} identical to a fresh quantization" in tensors.detail
    ), tensors.detail


@pytest.mark.parametrize(
    "name, outtype, why",
    [
        ("gptq-4-sym-actorder", "q4_0", "act-order (g_idx) interleaves the groups"),
        ("gptq-4-asym-actorder", "q4_0", "act-order (g_idx) interleaves the groups"),
        ("gptq-8-sym-actorder", "q8_0", "act-order (g_idx) interleaves the groups"),
        ("gptq-4-asym-v2", "q4_0", "the zero points are not 8 (asymmetric codes)"),
        ("gptq-8-asym-v2", "q8_0", "q - zero does not fit 8 bits"),
        ("fp8-e4m3-block", "q8_0", "no ggml type holds FP8 codes"),
    ],
)
def test_what_cannot_be_kept_is_rounded_once_and_said(name, outtype, why, source, tmp_path):
    d, _, _ = source(name)
    res = convert(d, tmp_path / "r.gguf", ConvertOptions(outtype=outtype))
    fmt = name.split("-")[0].upper()
    assert res.notes == [
        f"{fmt}: 28 tensor(s) rounded once to {outtype.upper()} from their exact dequantization ({why})"
    ]
    f32 = convert(d, tmp_path / "f32.gguf", ConvertOptions(outtype="f32")).output
    from exaone_gguf.convert.from_gguf import quantize_gguf

    once = quantize_gguf(f32, tmp_path / "once.gguf", outtype).output  # one rounding of the exact values
    a, b = tensor_bytes(res.output), tensor_bytes(once)
    assert [n for n in a if a[n] != b[n]] == [], "not the one rounding of the exact dequantization"
    assert validate(res.output, d, max_tokens=64).passed


@pytest.mark.parametrize("outtype", ["f32", "q4_0"])
def test_validate_catches_altered_codes(outtype, source, tmp_path):
    """validate compares with the exact dequantization: the honest file passes, the same file with one tensor's
    codes moved by one step (every code of a Q4_0 tensor, one code of an F32 one) fails."""
    from gguf_edit import rewrite

    d, exact, codes = source("gptq-4-sym")
    ckpt = load_checkpoint(d)
    honest = convert(d, tmp_path / "h.gguf", ConvertOptions(outtype=outtype)).output
    assert validate(honest, d, max_tokens=64).passed
    f, infos = gguf_tensors(honest, ckpt)
    target = infos["model.layers.1.mlp.up_proj.weight"].name
    f.close()

    scale = float(codes["model.layers.1.mlp.up_proj.weight"].s[0, 0])

    def change(data: np.ndarray) -> np.ndarray:
        data = np.array(data, copy=True)
        if outtype == "f32":
            data.view(np.float32)[7] += scale  # one weight one code step away
            return data
        b = data.reshape(-1, 18)
        b[:, 2:] = (((b[:, 2:] & 0xF) + 1) & 0xF) | (b[:, 2:] & 0xF0)  # every low-nibble code + 1
        return data

    bad = rewrite(honest, tmp_path / "bad.gguf", tensors={target: change})
    report = validate(bad, d, max_tokens=64)
    tensors = next(c for c in report.checks if c.name == "tensors: match source")
    assert not report.passed and tensors.status == "fail" and target in tensors.detail, tensors.detail


def test_real_compressed_tensors_config_is_read():
    cfg = read_config(fixture_path(CT_FIXTURE, "config.json"))
    from exaone_gguf.checkpoint.quantization import parse_quantization

    ct = parse_quantization(cfg["quantization_config"], "config.json")
    assert (ct.format, ct.bits, ct.strategy, ct.group_size, ct.ignore) == (
        "pack-quantized",
        4,
        "group",
        128,
        ("lm_head",),
    )
    assert parse_config(cfg, "config.json").family == "exaone4"


def _edit(qc: dict, path: str, value) -> dict:
    qc = json.loads(json.dumps(qc))
    *keys, last = path.split("/")
    node = qc
    for key in keys:
        node = node[key]
    node[last] = value
    return qc


REFUSED = [
    ("ct-int4-sym", "sparsity_config", {"format": "sparse-24-bitmask"}, "compressed-tensors 'sparsity_config'"),
    ("ct-int4-sym", "transform_config", {"config_groups": {"u": {"type": "hadamard"}}}, "'transform_config'"),
    ("ct-int4-sym", "kv_cache_scheme", {"num_bits": 8, "type": "float"}, "'kv_cache_scheme'"),
    ("ct-int4-sym", "config_groups/group_0/format", "marlin-24", "format 'marlin-24'"),
    ("ct-int4-sym", "config_groups/group_1", {"weights": {}}, "with 2 config groups"),
    ("ct-int4-sym", "quantization_status", "frozen", "quantization_status 'frozen'"),
    ("ct-int4-sym", "config_groups/group_0/weights/strategy", "tensor_group", "strategy 'tensor_group'"),
    ("gptq-4-sym", "bits", 3, "GPTQ with 3 bits"),
    ("gptq-4-sym", "checkpoint_format", "marlin", "checkpoint_format 'marlin'"),
    ("gptq-4-sym", "dynamic", {"-:.*down_proj": {}}, "GPTQ 'dynamic'"),
    ("gptq-4-sym", "quant_method", "bitsandbytes", "(bitsandbytes) are not supported"),
    ("fp8-e4m3-block", "weight_block_size", [128], "weight_block_size [128]"),
]


@pytest.mark.parametrize("name, key, value, words", REFUSED, ids=[f"{r[0]}:{r[1]}" for r in REFUSED])
def test_unhandled_config_entries_are_refused(name, key, value, words, source, tmp_path):
    d, _, _ = source(name)
    src = tmp_path / "src"
    shutil.copytree(d, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = _edit(cfg["quantization_config"], key, value)
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out.gguf"
    res = CliRunner().invoke(app, ["convert", str(src), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert words in " ".join(res.output.split()) and "Traceback" not in res.output, res.output
    assert not out.exists() and list(tmp_path.iterdir()) == [src]
    with pytest.raises(InputError, match="not supported|not two"):
        load_checkpoint(src)


def test_a_layer_listed_in_ignore_but_quantized_is_refused(source, tmp_path):
    d, _, _ = source("ct-int4-sym")
    src = tmp_path / "src"
    shutil.copytree(d, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"]["ignore"] = ["lm_head", "re:.*mlp.down_proj$"]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="'model.layers.0.mlp.down_proj' is listed in 'ignore'"):
        load_checkpoint(src)


def test_grouped_tensor_reads_any_row_order(source):
    """Chunks that cut packed words and permuted rows give the same values as the whole tensor."""
    d, exact, _ = source("gptq-4-asym-actorder")
    ckpt = load_checkpoint(d)
    h = ckpt.tensors["model.layers.2.self_attn.k_proj.weight"]
    assert isinstance(h, GroupedTensor) and not h.contiguous
    whole = h.to_f32()
    assert np.array_equal(whole, exact["model.layers.2.self_attn.k_proj.weight"])
    assert np.array_equal(h.to_f32(5, 37), whole[5:37])
    rows = np.array([9, 3, 100, 4])
    q, z, s = h.codes(rows)
    assert np.array_equal(q, h.codes(slice(None))[0][rows])


# What transformers (5.x) loads on CPU: compressed-tensors (with the compressed-tensors package) and FP8 (with
# accelerate; it dequantizes without a GPU, and needs whole blocks). Not here: GPTQ (optimum + gptqmodel, GPU
# kernels) and asymmetric pack-quantized (transformers registers the zero point unpacked, [N, G], and refuses
# the packed [N/8, G] the compressed-tensors compressor writes). Measured max |diff| / max |logit| 4.9e-7 ..
# 6.0e-7 over the four (llama.cpp F32 KV cache, 48 tokens): the bound of test_convert_logits.
TRANSFORMERS_CPU = ["ct-int4-sym", "ct-int8-channel", "ct-fp8-channel", "fp8-e4m3-128"]
F32_REL = 1e-5


@pytest.mark.parametrize("name", TRANSFORMERS_CPU)
def test_logits_match_transformers(name, source, tmp_path):
    from conftest import llama_cpp_logits
    from hf_models import transformers_logits

    pytest.importorskip("compressed_tensors" if name.startswith("ct") else "accelerate")
    d, _, _ = source(name)
    gguf = convert(d, tmp_path / "f32.gguf", ConvertOptions(outtype="f32")).output
    tokens = [1] + np.random.default_rng(1).integers(362, 1100, 47).tolist()
    ref, got = transformers_logits(d, tokens, tmp_path), llama_cpp_logits(gguf, tokens)
    rel = float(np.abs(ref - got).max() / np.abs(ref).max())
    print(f"{name}: max |diff| / max |logit| {rel:.2e}")
    assert np.array_equal(ref.argmax(-1), got.argmax(-1)) and rel <= F32_REL, rel


def test_nan_in_a_quantized_layer_is_refused(source, tmp_path):
    """The float parts of a quantized layer (FP8 weights, scales) are checked for NaN like any float weight."""
    d, _, _ = source("fp8-e4m3-block")
    src = tmp_path / "src"
    shutil.copytree(d, src)
    h = SafetensorsFile(src / "model.safetensors").tensors["model.layers.2.mlp.up_proj.weight"]
    with open(src / "model.safetensors", "r+b") as f:
        f.seek(h.begin + 77)
        f.write(bytes([0x7F]))  # e4m3fn NaN
    out = tmp_path / "out.gguf"
    res = CliRunner().invoke(app, ["convert", str(src), "-o", str(out)])
    assert res.exit_code == 2 and "model.layers.2.mlp.up_proj.weight' contains NaN" in " ".join(res.output.split())
    assert not out.exists()


@pytest.mark.parametrize("name", ["fp8-e4m3-block", "gptq-4-sym"])
def test_k_exaone_quantized_experts(name, tiny_dir, tmp_path):
    """K-EXAONE's FP8 release quantizes every expert: stacked experts dequantize exactly (F32 equals the exact
    values), and with q4_0 they stay Q4_0 (rounded once, said so) while the attention layers keep their codes."""
    d = tmp_path / name
    exact, _ = make_source(SOURCES[name], tiny_dir("k-exaone"), d)
    ckpt = load_checkpoint(d)
    f32 = convert(d, tmp_path / "f32.gguf", ConvertOptions(outtype="f32")).output
    f, stacked = read_gguf(f32), 0
    for m in family_for(ckpt.spec).tensor_map(ckpt.spec):
        names = list(m.sources())
        if all(n in exact for n in names):
            want = np.concatenate([exact[n].reshape(-1) for n in names])
            assert np.array_equal(f.tensor_f32(m.gguf_name).reshape(-1), want), m.gguf_name
            stacked += len(names) > 1
    assert stacked >= 3 * (ckpt.spec.num_layers - 1)  # gate, up, down experts of every MoE layer
    res = convert(d, tmp_path / "q4_0.gguf", ConvertOptions(outtype="q4_0"))
    assert res.tensor_types["blk.1.ffn_up_exps.weight"] == "Q4_0"  # not raised to Q8_0 as a float weight
    fmt = "FP8" if name.startswith("fp8") else "GPTQ"
    assert any(n.startswith(f"{fmt}: ") and "experts stacked into one tensor" in n for n in res.notes), res.notes
    assert validate(res.output, d, max_tokens=32).passed
