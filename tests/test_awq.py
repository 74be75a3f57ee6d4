"""AWQ GEMM input: the packing layout, exact dequantization, config handling, convert + validate, and
`--outtype q4_1` keeping AWQ's own codes (with the three KLD figures of issue 7)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import fixture_path
from gguf import GGMLQuantizationType as T
from helpers import decode_q4_1, unpermute_rows

from exaone_gguf.checkpoint.awq import (
    AWQ_ORDER,
    AWQTensor,
    dequantize,
    pack_int4,
    parse_awq_config,
    quantize_awq,
    unpack_int4,
)
from exaone_gguf.checkpoint.awq_q4_1 import encode_q4_1, q4_1_exactness
from exaone_gguf.checkpoint.spec import read_config
from exaone_gguf.checkpoint.st_writer import TensorSource, write_checkpoint_weights
from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.errors import InputError
from exaone_gguf.families import load_checkpoint, parse_config
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.tiny.awq import _materialize
from exaone_gguf.validate import validate

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)


def test_pack_layout_bit_by_bit():
    """Nibble i of word j holds column 8j + AWQ_ORDER[i] (section 7), checked with plain integer shifts."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (3, 32)).astype(np.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == np.int32 and packed.shape == (3, 4)
    assert (packed < 0).any()  # high nibble >= 8 sets the int32 sign: unpacking must mask it
    for r in range(3):
        for j in range(4):
            word = int(packed[r, j]) & 0xFFFFFFFF
            for i in range(8):
                assert (word >> (4 * i)) & 0xF == codes[r, 8 * j + AWQ_ORDER[i]]
    assert np.array_equal(unpack_int4(packed), codes)
    # A packer using the natural order (no AWQ_ORDER) is not read back as the same codes.
    natural = sum(codes[:, i::8].astype(np.uint32) << (4 * i) for i in range(8)).view(np.int32)
    assert not np.array_equal(unpack_int4(natural), codes)


def _write_awq_layer(tmp_path, codes, zeros, scales, prefix="model.layers.0.mlp.up_proj"):
    """One AWQ Linear in a safetensors file, from known integer codes (W is [N, K]; stored transposed)."""
    srcs = [
        TensorSource(prefix + ".qweight", "I32", (codes.shape[1], codes.shape[0] // 8), lambda: [pack_int4(codes.T)]),
        TensorSource(prefix + ".qzeros", "I32", (zeros.shape[1], zeros.shape[0] // 8), lambda: [pack_int4(zeros.T)]),
        TensorSource(prefix + ".scales", "F16", (scales.shape[1], scales.shape[0]), lambda: [scales.T.copy()]),
    ]
    write_checkpoint_weights(tmp_path, srcs)
    from exaone_gguf.checkpoint.safetensors import SafetensorsFile

    t = SafetensorsFile(tmp_path / "model.safetensors").tensors
    return AWQTensor(prefix, t[prefix + ".qweight"], t[prefix + ".qzeros"], t[prefix + ".scales"], 128)


def test_dequantize_known_codes_exactly(tmp_path):
    rng = np.random.default_rng(1)
    n, k = 48, 256
    codes = rng.integers(0, 16, (n, k)).astype(np.uint8)
    zeros = rng.integers(0, 16, (n, k // 128)).astype(np.uint8)
    scales = (rng.random((n, k // 128)) * 0.05 + 1e-3).astype(np.float16)
    h = _write_awq_layer(tmp_path, codes, zeros, scales)
    assert h.shape == (n, k) and h.name == "model.layers.0.mlp.up_proj.weight"
    want = np.empty((n, k), np.float64)
    for r in range(n):
        for c in range(k):
            want[r, c] = (int(codes[r, c]) - int(zeros[r, c // 128])) * float(scales[r, c // 128])
    assert np.array_equal(h.to_f32().astype(np.float64), want)  # exact: 4-bit x fp16 fits float32
    assert np.array_equal(h.to_f32(5, 21), h.to_f32()[5:21])  # row chunks that cut packed words
    q, z, s = h.codes(np.array([9, 3, 40]))
    assert np.array_equal(q, codes[[9, 3, 40]]) and np.array_equal(z, zeros[[9, 3, 40]])


def test_tiny_awq_dequantizes_to_the_packed_weights(tiny_dir):
    """make-tiny exaone3-awq packs AutoAWQ-quantized float weights; reading gives (q - z) * s of exactly those."""
    from exaone_gguf.tiny import _weights

    d = tiny_dir("exaone3-awq")
    ckpt = load_checkpoint(d)
    awq = [h for h in ckpt.tensors.values() if isinstance(h, AWQTensor)]
    assert len(awq) == 7 * ckpt.spec.num_layers and "lm_head.weight" not in {h.name for h in awq}
    floats = {s.name: s for s in _weights(ckpt.spec, 0, "F16")}
    for h in awq[:: max(1, len(awq) // 6)] + awq[-1:]:
        codes, zeros, scales = quantize_awq(_materialize(floats[h.name]), 128)
        assert np.array_equal(h.to_f32(), dequantize(codes, zeros, scales))
        assert np.array_equal(h.codes(slice(None))[0], codes)


@pytest.mark.parametrize(
    "name", ["exaone-3.0-7.8B-instruct-awq", "exaone-3.5-2.4B-instruct-awq", "exaone-3.5-32B-instruct-awq"]
)
def test_lg_awq_configs_are_accepted(name):
    cfg = read_config(fixture_path(name, "config.json"))
    spec = parse_config(cfg, name)
    assert spec.family == "exaone"
    awq = parse_awq_config(cfg["quantization_config"], name)
    assert (awq.bits, awq.group_size, awq.version) == (4, 128, "gemm")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"version": "gemv"}, "gemv"),
        ({"bits": 8}, "8 bits"),
        ({"zero_point": False}, "zero points"),
        ({"group_size": 100}, "group_size"),
        ({"quant_method": "bitsandbytes"}, "bitsandbytes"),
    ],
)
def test_unsupported_quantization_is_refused(change, words):
    cfg = read_config(fixture_path("exaone-3.5-2.4B-instruct-awq", "config.json"))
    cfg["quantization_config"] = {**cfg["quantization_config"], **change}
    with pytest.raises(InputError, match=words):
        parse_config(cfg, "config.json")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_modules_to_not_convert_is_honoured(tiny_dir, tmp_path):
    d = _copy(tiny_dir("exaone3-awq"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["modules_to_not_convert"] = ["lm_head", "mlp.c_proj"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="modules_to_not_convert"):
        load_checkpoint(d)


def test_missing_awq_part_is_refused(tiny_dir, tmp_path):
    from exaone_gguf.checkpoint.safetensors import SafetensorsFile

    d = tmp_path / "m"
    d.mkdir()
    src = tiny_dir("exaone3-awq")
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, d / f.name)
    tensors = SafetensorsFile(src / "model.safetensors").tensors
    keep = [h for n, h in tensors.items() if n != "transformer.h.1.mlp.c_proj.qzeros"]
    write_checkpoint_weights(d, [TensorSource(h.name, h.dtype, h.shape, lambda h=h: [h.raw()]) for h in keep])
    with pytest.raises(InputError, match="lacks 'transformer.h.1.mlp.c_proj.qzeros'"):
        load_checkpoint(d)


@pytest.mark.parametrize("family", ["exaone3-awq", "llama-awq"])
def test_awq_convert_validates(family, tiny_dir, tiny_gguf):
    report = validate(tiny_gguf(family, "f32"), tiny_dir(family), max_tokens=128)
    failed = [f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail"]
    assert report.passed, failed
    assert report.metrics["same_top1"] == 100.0


def test_q4_1_block_encoding_round_trip():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 16, (4, 256)).astype(np.uint8)
    zeros = rng.integers(0, 16, (4, 2)).astype(np.uint8)
    scales = (rng.random((4, 2)) * 0.01).astype(np.float16)
    rows = encode_q4_1(codes, zeros, scales)
    assert rows.shape == (4, 8 * 20)
    got_codes, got_w = decode_q4_1(rows, 256)
    assert np.array_equal(got_codes, codes)
    exact = dequantize(codes, zeros, scales)
    m_err = np.abs(got_w - exact).max()
    assert m_err <= np.abs(exact).max() * 2**-11  # only the fp16 rounding of the minimum remains
    # and ggml itself reads our blocks the same way
    from gguf.quants import dequantize as gg_dequantize

    assert np.array_equal(gg_dequantize(rows, T.Q4_1).reshape(4, 256), got_w)


def _awq_codes_in_file(gguf_path, ckpt):
    """For every AWQ layer: the Q4_1 codes in the file equal the checkpoint's AWQ codes (q/k unpermuted)."""
    from exaone_gguf.families import family_for

    f = read_gguf(gguf_path)
    checked = 0
    for m in family_for(ckpt.spec).tensor_map(ckpt.spec):
        h = ckpt.tensors[m.hf_name]
        if not isinstance(h, AWQTensor):
            continue
        info = f.tensor(m.gguf_name)
        assert info.tensor_type == T.Q4_1, m.gguf_name
        codes, _ = decode_q4_1(np.asarray(f.tensor_bytes(info)).reshape(h.n_rows, -1), h.row_numel)
        if m.transform is not None:  # llama: q/k rows were permuted for llama.cpp's rope
            codes = unpermute_rows(ckpt.spec.head_dim)(codes)
        assert np.array_equal(codes, h.codes(slice(None))[0]), m.gguf_name
        checked += 1
    return checked


def _weight_rms(gguf_path, ckpt) -> float:
    """RMS error over the AWQ layers of a file's weights against the exact AWQ weights."""
    from exaone_gguf.families import family_for

    f = read_gguf(gguf_path)
    se = n = 0.0
    for m in family_for(ckpt.spec).tensor_map(ckpt.spec):
        h = ckpt.tensors[m.hf_name]
        if isinstance(h, AWQTensor):
            w = f.tensor_f32(m.gguf_name).reshape(h.shape)
            if m.transform is not None:
                w = unpermute_rows(ckpt.spec.head_dim)(w)
            se += float(np.sum((w.astype(np.float64) - h.to_f32()) ** 2))
            n += w.size
    return (se / n) ** 0.5


def tensor_types(path) -> dict[str, str]:
    from exaone_gguf.gguf_io import read_gguf

    return {t.name: t.tensor_type.name for t in read_gguf(path).tensors}


@pytest.mark.parametrize("family", ["exaone3-awq", "llama-awq"])
def test_awq_to_q4_1_keeps_codes_and_beats_requantizing(family, tiny_dir, tmp_path):
    from exaone_gguf.convert.from_gguf import quantize_gguf

    src = tiny_dir(family)
    ckpt = load_checkpoint(src)
    kept = tmp_path / "awq-q4_1.gguf"
    convert(src, kept, ConvertOptions(outtype="q4_1"))
    assert _awq_codes_in_file(kept, ckpt) == 7 * ckpt.spec.num_layers

    f32 = tmp_path / "deq-f32.gguf"
    convert(src, f32, ConvertOptions(outtype="f32"))
    files = {"AWQ codes -> Q4_1": kept}
    for t in ("q4_1", "q4_k_m"):
        files[f"dequantized -> {t.upper()}"] = tmp_path / f"re-{t}.gguf"
        quantize_gguf(f32, files[f"dequantized -> {t.upper()}"], t)
    kld, rms = {}, {}
    for label, path in files.items():
        report = validate(path, src, max_tokens=128)
        kld[label], rms[label] = report.metrics["mean_kld"], _weight_rms(path, ckpt)
    stats = q4_1_exactness([h for h in ckpt.tensors.values() if isinstance(h, AWQTensor)])
    print(f"\n{family}: mean KLD vs AWQ reference (whole file, llama.cpp's mixture for the other tensors)")
    for label in files:
        print(f"  {label:<24} mean KLD {kld[label]:.4g}   AWQ-layer weight RMS error {rms[label]:.3g}")
    print(
        f"  fp16 minimum inexact in {stats['inexact_min_blocks']}/{stats['blocks']} Q4_1 blocks "
        f"({stats['inexact_fraction']:.1%}), max weight error {stats['max_abs_error']:.3g} "
        f"({stats['max_error_in_scales']:.2%} of the block scale)"
    )
    a, q41, q4km = kld.values()
    assert a <= q41 and a <= q4km  # issue 7: no worse than either requantization of the dequantized weights
    assert (
        tensor_types(kept)["token_embd.weight"] == "Q8_0"
    )  # AWQ left it unquantized: 8 bits, not a second 4-bit rounding
    ra, rq41, rq4km = rms.values()
    assert ra < rq41 and ra < rq4km  # the AWQ layers themselves: codes kept beat both requantizations
    assert stats["max_error_in_scales"] <= 15 * 2**-11  # fp16 rounding of m = -z * s, z <= 15: half an ulp at most
