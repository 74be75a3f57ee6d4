"""Type mixtures and tensor bytes equal what llama.cpp's own quantizer (llama_model_quantize) writes.

Small GGUF models (real EXAONE tensor names and metadata, tiny row counts) are quantized by
llama-cpp-python for every file type; every tensor's type must equal plan_types and its bytes
must equal kernels.quantize of the same float32 source.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from exaone_gguf.errors import InputError
from exaone_gguf.quantize import formats, kernels
from exaone_gguf.quantize.mixtures import file_type_value, plan_types


@dataclass(frozen=True)
class Model:
    arch: str
    n_layers: int
    hidden: int  # ne[0] of most matrices
    ffn: int  # ne[0] of ffn_down
    n_head: int
    n_head_kv: int
    tied: bool
    rows: int = 8  # ne[1] of layer matrices: kept tiny, shapes are not checked by the quantizer

    @property
    def head_dim(self) -> int:
        return 64


def _layer_tensors(m: Model, i: int) -> dict[str, tuple[int, ...]]:
    """GGUF name -> numpy shape (ne reversed)."""
    mats = {
        f"blk.{i}.attn_q.weight": (m.rows, m.hidden),
        f"blk.{i}.attn_k.weight": (m.rows, m.hidden),
        f"blk.{i}.attn_v.weight": (m.rows, m.hidden),
        f"blk.{i}.attn_output.weight": (m.rows, m.hidden),
        f"blk.{i}.ffn_gate.weight": (m.rows, m.hidden),
        f"blk.{i}.ffn_up.weight": (m.rows, m.hidden),
        f"blk.{i}.ffn_down.weight": (m.rows, m.ffn),
    }
    if m.arch == "exaone4":
        norms = {
            f"blk.{i}.attn_q_norm.weight": (m.head_dim,),
            f"blk.{i}.attn_k_norm.weight": (m.head_dim,),
            f"blk.{i}.post_attention_norm.weight": (m.hidden,),
            f"blk.{i}.post_ffw_norm.weight": (m.hidden,),
        }
    else:
        norms = {f"blk.{i}.attn_norm.weight": (m.hidden,), f"blk.{i}.ffn_norm.weight": (m.hidden,)}
    return {**mats, **norms}


def write_model(path: Path, m: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Write an F32 GGUF that llama_model_quantize accepts; returns the source arrays by name."""
    rng = np.random.default_rng(seed)
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (300, m.hidden),  # > 1 chunk for threads
        "output_norm.weight": (m.hidden,),
        "rope_freqs.weight": (m.head_dim // 2,),
    }
    if not m.tied:
        shapes["output.weight"] = (64, m.hidden)
    for i in range(m.n_layers):
        shapes.update(_layer_tensors(m, i))

    w = gguf.GGUFWriter(str(path), m.arch)
    w.add_block_count(m.n_layers)
    w.add_context_length(4096)
    w.add_embedding_length(m.hidden)
    w.add_feed_forward_length(m.ffn)
    w.add_head_count(m.n_head)
    w.add_head_count_kv(m.n_head_kv)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-5)
    if m.arch == "exaone4":
        w.add_key_length(m.head_dim)
        w.add_value_length(m.head_dim)
    else:
        w.add_rope_dimension_count(m.head_dim)
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    data = {}
    for name, shape in shapes.items():
        data[name] = rng.standard_normal(shape).astype(np.float32)
        w.add_tensor(name, data[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return data


def llama_quantize(src: Path, dst: Path, ftype: str, nthread: int = 2) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type_value(ftype)
    params.nthread = nthread
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed for {ftype}"


def read_types_and_bytes(path: Path) -> tuple[dict[str, T], dict[str, bytes], int]:
    r = gguf.GGUFReader(str(path))
    types = {t.name: T(t.tensor_type) for t in r.tensors}
    raw = {t.name: np.asarray(t.data).tobytes() for t in r.tensors}
    ftype = int(r.fields["general.file_type"].parts[-1][0])
    return types, raw, ftype


def plan_for(m: Model, data: dict[str, np.ndarray], ftype: str) -> dict[str, T]:
    specs = [(name, tuple(reversed(a.shape))) for name, a in data.items()]
    return plan_types(specs, ftype, m.arch, m.n_layers, n_gqa=m.n_head // m.n_head_kv)


MODELS = {
    # EXAONE 4.0-1.2B layout: 30 layers, tied embeddings, GQA 4
    "exaone4-30-tied": Model("exaone4", 30, 256, 256, 4, 1, tied=True),
    # EXAONE 3.5-32B layout: 64 layers, untied, GQA 2 (so the q2_k/iq4_xs attn_v rules differ)
    "exaone-64-untied": Model("exaone", 64, 256, 512, 4, 2, tied=False),
    # rows not a multiple of 256 (fallbacks to 32-blocks), ffn_down rows not a multiple of 32 (F16)
    "exaone4-odd-rows": Model("exaone4", 6, 288, 80, 4, 1, tied=False),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request, tmp_path_factory):
    m = MODELS[request.param]
    path = tmp_path_factory.mktemp(request.param) / "f32.gguf"
    return m, path, write_model(path, m)


@pytest.mark.parametrize("ftype", list(formats.FILE_TYPES))
@pytest.mark.slow
def test_types_and_bytes_match_llama_quantize(model, ftype, tmp_path):
    m, src, data = model
    out = tmp_path / f"{ftype}.gguf"
    llama_quantize(src, out, ftype)
    types, raw, written_ftype = read_types_and_bytes(out)

    assert written_ftype == file_type_value(ftype)
    plan = plan_for(m, data, ftype)
    assert set(types) == set(plan)
    wrong = {n: (plan[n].name, types[n].name) for n in plan if plan[n] != types[n]}
    assert not wrong, f"plan vs llama.cpp differ: {wrong}"
    for name, arr in data.items():
        ours = kernels.quantize(arr if arr.ndim > 1 else arr[None, :], plan[name], threads=2).tobytes()
        assert ours == raw[name], f"{name} ({plan[name].name}) bytes differ from llama.cpp"


def test_plan_detects_a_wrong_layer_count(tmp_path):
    # The test above would fail if the counters were off: with a wrong block count q4_k_m differs.
    m = MODELS["exaone4-30-tied"]
    data = write_model(tmp_path / "m.gguf", m)
    right = plan_for(m, data, "q4_k_m")
    specs = [(name, tuple(reversed(a.shape))) for name, a in data.items()]
    wrong = plan_types(specs, "q4_k_m", m.arch, m.n_layers + 8, n_gqa=m.n_head // m.n_head_kv)
    assert right != wrong


def test_byte_comparison_detects_a_wrong_type(model, tmp_path):
    m, src, data = model
    out = tmp_path / "q4_k_m.gguf"
    llama_quantize(src, out, "q4_k_m")
    types, raw, _ = read_types_and_bytes(out)
    name = "blk.0.attn_q.weight"
    used = types[name]
    other = {T.Q4_K: T.Q5_K, T.Q5_0: T.Q5_1}[used]
    assert kernels.quantize(data[name], used).tobytes() == raw[name]
    assert kernels.quantize(data[name], other).tobytes() != raw[name]
    perturbed = data[name].copy()
    perturbed[0, 0] += 1.0
    assert kernels.quantize(perturbed, used).tobytes() != raw[name]


def _ne(rows: int, cols: int) -> tuple[int, int]:
    return (cols, rows)


def _dense_specs(n_layers: int, tied: bool) -> list[tuple[str, tuple[int, ...]]]:
    specs = [("token_embd.weight", _ne(102400, 2048)), ("output_norm.weight", (2048,))]
    if not tied:
        specs.append(("output.weight", _ne(102400, 2048)))
    for i in range(n_layers):
        for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"):
            specs.append((f"blk.{i}.{t}.weight", _ne(2048, 2048)))
        specs.append((f"blk.{i}.ffn_down.weight", _ne(2048, 4096)))
        specs.append((f"blk.{i}.attn_norm.weight", (2048,)))
    return specs


@pytest.mark.parametrize(
    ("n_layers", "q6_layers"),
    [
        (30, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]),
        (32, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]),
        (64, list(range(8)) + list(range(10, 56, 3)) + list(range(56, 64))),
    ],
)
def test_q4_k_m_q6_layers_match_reference_notes(n_layers, q6_layers):
    plan = plan_types(_dense_specs(n_layers, tied=True), "q4_k_m", "exaone", n_layers, n_gqa=4)
    for t in ("attn_v", "ffn_down"):
        got = [i for i in range(n_layers) if plan[f"blk.{i}.{t}.weight"] == T.Q6_K]
        assert got == q6_layers
    assert plan["token_embd.weight"] == T.Q6_K  # tied: token_embd is the output matrix
    assert plan["blk.3.attn_q.weight"] == T.Q4_K
    assert plan["output_norm.weight"] == T.F32


def test_plan_is_independent_of_input_order():
    specs = _dense_specs(30, tied=False)
    assert plan_types(specs, "q3_k_m", "exaone4", 30, n_gqa=4) == plan_types(
        list(reversed(specs)), "q3_k_m", "exaone4", 30, n_gqa=4
    )


def test_plan_keeps_the_source_type_of_unquantized_tensors():
    plan = plan_types(
        [
            ("output_norm.weight", (256,), T.F16),
            ("token_embd.weight", (256, 10), T.BF16),
            ("blk.0.attn_q.weight", (256, 1)),
        ],
        "q8_0",
        "exaone4",
        1,
    )
    assert plan == {
        "output_norm.weight": T.F16,
        "token_embd.weight": T.Q8_0,
        "blk.0.attn_q.weight": T.F32,
    }  # [256, 1] counts as 1-D in ggml


def test_plan_rejects_bad_requests():
    with pytest.raises(InputError):
        plan_types([("output.weight", (256, 4))], "q4_k_xl", "exaone4", 1)
    with pytest.raises(ValueError, match="n_gqa"):
        plan_types([("blk.0.attn_v.weight", (256, 4))], "q2_k", "exaone4", 1)
    assert file_type_value("Q4_K_M") == 15
