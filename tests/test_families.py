"""The family registry and the tensor-table forms beyond one-to-one (stacked, sliced, copy, prefixes).

The forms are exercised on small real safetensors files written in a tmp dir, streamed through the
converter's own `stream_tensor`, and compared with numpy's stack / split of the same data.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from exaone_gguf import families as F
from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.checkpoint.safetensors import SafetensorsFile
from exaone_gguf.checkpoint.st_writer import TensorSource, write_checkpoint_weights
from exaone_gguf.convert import pipeline
from exaone_gguf.convert.pipeline import FileSpan, check_tensors, stream_tensor
from exaone_gguf.elements import f32_to_bf16_bits
from exaone_gguf.errors import InputError
from exaone_gguf.families import parse_config
from exaone_gguf.tiny import family_config

E, I, H = 4, 6, 32  # experts, rows per expert, row length


def _write(tmp_path: Path, arrays: dict[str, np.ndarray], dtype: str = "F32") -> dict:
    """Real safetensors on disk -> their lazy handles."""

    def enc(a):
        return f32_to_bf16_bits(a) if dtype == "BF16" else a.astype(np.float16 if dtype == "F16" else np.float32)

    tmp_path.mkdir(parents=True, exist_ok=True)
    sources = [TensorSource(n, dtype, a.shape, lambda a=a: [enc(a)]) for n, a in arrays.items()]
    (path,) = write_checkpoint_weights(tmp_path, sources)
    return SafetensorsFile(path).tensors


def _streamed(handle, qtype=T.F32) -> np.ndarray:
    """The bytes stream_tensor writes, back as float32 (F32 output) or as raw bytes (other types)."""

    def data(c):  # bytes kept as they are come as spans of the source file
        if isinstance(c, FileSpan):
            with open(c.path, "rb") as f:
                f.seek(c.offset)
                return np.frombuffer(f.read(c.nbytes), np.uint8)
        return np.asarray(c).reshape(-1).view(np.uint8)

    flat = np.concatenate([data(c) for c in stream_tensor(handle, qtype)])
    return flat.view(np.float32) if qtype == T.F32 else flat


def _experts(rng, n=E, rows=I, cols=H):
    return {
        f"model.layers.0.mlp.experts.{x}.gate_proj.weight": rng.standard_normal((rows, cols), dtype=np.float32)
        for x in range(n)
    }


class _Recording:
    """A real handle that records the largest array its raw()/to_f32() returned (elements)."""

    def __init__(self, h):
        self.h, self.largest = h, 0

    def __getattr__(self, name):
        return getattr(self.h, name)

    def raw(self, *a):
        out = self.h.raw(*a)
        self.largest = max(self.largest, out.size)
        return out

    def to_f32(self, *a):
        out = self.h.to_f32(*a)
        self.largest = max(self.largest, out.size)
        return out


# ------------------------------------------------------------------------------------------------ registry


def test_every_hf_architecture_is_claimed_by_one_family():
    assert set(F.registry.READINGS) == set(F.supported_architectures())
    for fam in F.families().values():
        for arch in fam.architectures:
            cfg = {**family_config(fam.tiny[0].name), "architectures": [arch]}
            assert parse_config(cfg).family == fam.name


def test_unsupported_architecture_lists_the_registry():
    cfg = {**family_config("exaone4"), "architectures": ["Qwen2_5_VLForConditionalGeneration"]}
    with pytest.raises(InputError, match="not supported; supported: " + ", ".join(F.supported_architectures())):
        parse_config(cfg)


def test_registering_a_family_or_an_architecture_twice_is_refused():
    fam = F.families()["exaone4"]
    with pytest.raises(ValueError, match="model family exaone4 registered twice"):
        F.registry._index((*F.FAMILIES, fam), ())
    renamed = replace(fam, name="other", config=replace(fam.config, family="other"), tiny=())
    with pytest.raises(ValueError, match="HF architecture Exaone4ForCausalLM is claimed by two families"):
        F.registry._index((*F.FAMILIES, renamed), ())
    with pytest.raises(ValueError, match="alternate llama for unknown family other"):
        F.registry._index(F.FAMILIES, (replace(F.ALTERNATES[0], name="other"),))


def test_family_gguf_archs_come_from_gguf():
    from gguf import MODEL_ARCH_NAMES

    assert set(F.gguf_archs()) <= set(MODEL_ARCH_NAMES.values())


def test_nested_text_config_is_read():
    """A multimodal config: the language model's keys in text_config, tie/dtype on top."""
    flat = family_config("exaone4")
    text = {k: v for k, v in flat.items() if k not in ("architectures", "tie_word_embeddings", "torch_dtype")}
    nested = {
        "architectures": flat["architectures"],
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "text_config": text,
    }
    a, b = parse_config(flat), parse_config(nested)
    assert (b.num_layers, b.hidden_size, b.head_dim, b.rms_eps, b.sliding_window) == (
        a.num_layers,
        a.hidden_size,
        a.head_dim,
        a.rms_eps,
        a.sliding_window,
    )
    assert b.tie_word_embeddings and b.torch_dtype == "bfloat16"
    with pytest.raises(InputError, match="key 'hidden_size' must be an integer"):
        parse_config({**nested, "text_config": {**text, "hidden_size": "wide"}})
    with pytest.raises(InputError, match="'text_config' must be an object"):
        parse_config({**nested, "text_config": [1]})


def test_chat_format_by_arch_and_by_template_marker():
    assert F.chat_format_for("exaone4", None).name == "exaone4"
    assert F.chat_format_for("exaone", "[|endofturn|] <thought>").name == "exaone-deep"
    assert F.chat_format_for("llama", "[|endofturn|]").name == "exaone3"
    assert F.chat_format_for("llama", "<s>[INST]") is None


def test_reference_names_resolve():
    from exaone_gguf.model import forward_named

    named = {f.reference for f in F.families().values() if f.reference}
    assert named and all(callable(forward_named(n)) for n in named)
    with pytest.raises(ModuleNotFoundError):
        forward_named("exaone9")


# ------------------------------------------------------------------------------------------------- stacked


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_stacked_streams_equal_to_numpy_stack(tmp_path, dtype):
    rng = np.random.default_rng(0)
    parts = _experts(rng)
    handles = _write(tmp_path, parts, dtype)
    m = F.TensorMapping.stacked("blk.0.ffn_gate_exps.weight", list(parts), (I, H))
    src = m.open(handles)
    assert src.shape == (E, I, H) and m.hf_shape == (E, I, H) and src.dtype == dtype
    want = np.stack([handles[n].to_f32() for n in parts])
    assert np.array_equal(_streamed(src), want.reshape(-1))
    assert np.array_equal(src.to_f32(I - 2, I + 3), want.reshape(-1, H)[I - 2 : I + 3])  # across two experts
    if dtype != "F32":  # 16-bit sources to the same 16-bit type: the source bits, unchanged
        out = _streamed(src, T.F16 if dtype == "F16" else T.BF16).view(np.uint16)
        assert np.array_equal(out, np.stack([handles[n].raw() for n in parts]).reshape(-1).view(np.uint16))


def test_stacked_quantizes_like_the_stacked_array(tmp_path):
    from exaone_gguf.convert.pipeline import convert_rows

    rng = np.random.default_rng(1)
    parts = _experts(rng)
    src = F.TensorMapping.stacked("x", list(parts), (I, H)).open(_write(tmp_path, parts))
    want = convert_rows(np.stack(list(parts.values())).reshape(-1, H), T.Q8_0)
    assert np.array_equal(_streamed(src, T.Q8_0), want.reshape(-1).view(np.uint8))


def test_stacked_reads_at_most_one_expert_at_a_time(tmp_path, monkeypatch):
    """Never the whole stack: each source read is within one expert, and with a chunk smaller than an
    expert each row chunk stream_tensor converts is smaller than an expert too."""
    rng = np.random.default_rng(2)
    parts = _experts(rng, n=8, rows=64, cols=64)
    handles = {n: _Recording(h) for n, h in _write(tmp_path, parts).items()}
    src = F.TensorMapping.stacked("x", list(parts), (64, 64)).open(handles)
    expert = 64 * 64
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 4 * expert // 3)  # a chunk is 21 rows: chunks straddle experts
    chunks = list(stream_tensor(src, T.F32))
    largest_chunk = max(np.asarray(c).size for c in chunks)
    largest_read = max(h.largest for h in handles.values())
    assert largest_chunk == 21 * 64 < expert
    assert largest_read == 21 * 64  # reads follow the chunks: a chunk's rows, within one expert
    assert np.array_equal(
        np.concatenate([np.asarray(c).reshape(-1) for c in chunks]), np.stack(list(parts.values())).reshape(-1)
    )


def test_stacked_parts_in_different_dtypes_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    parts = _experts(rng, n=2)
    a = _write(tmp_path / "a", dict(list(parts.items())[:1]), "F32")
    b = _write(tmp_path / "b", dict(list(parts.items())[1:]), "BF16")
    with pytest.raises(InputError, match="different dtypes"):
        F.TensorMapping.stacked("x", list(parts), (I, H)).open({**a, **b})


# -------------------------------------------------------------------------------------------------- sliced


def test_sliced_fused_gate_up_equals_numpy_split(tmp_path):
    rng = np.random.default_rng(4)
    fused = rng.standard_normal((E, 2 * I, H), dtype=np.float32)  # experts.gate_up_proj [E, 2I, H]
    handles = _write(tmp_path, {"experts.gate_up_proj": fused}, "BF16")
    gate = F.TensorMapping.sliced("ffn_gate_exps", "experts.gate_up_proj", (E, 2 * I, H), 1, 0, I)
    up = F.TensorMapping.sliced("ffn_up_exps", "experts.gate_up_proj", (E, 2 * I, H), 1, I, 2 * I)
    full = handles["experts.gate_up_proj"].to_f32()
    want_gate, want_up = np.split(full, 2, axis=1)
    assert gate.hf_shape == up.hf_shape == (E, I, H)
    assert np.array_equal(_streamed(gate.open(handles)), want_gate.reshape(-1))
    assert np.array_equal(_streamed(up.open(handles)), want_up.reshape(-1))


def test_sliced_last_axis_equals_numpy_split(tmp_path):
    rng = np.random.default_rng(5)
    fused = rng.standard_normal((E, H, 2 * I), dtype=np.float32)  # a fused tensor split along its rows' axis
    handles = _write(tmp_path, {"w": fused})
    a = F.TensorMapping.sliced("a", "w", fused.shape, -1, 0, I).open(handles)
    b = F.TensorMapping.sliced("b", "w", fused.shape, 2, I, 2 * I).open(handles)
    assert a.shape == (E, H, I)
    assert np.array_equal(_streamed(a), fused[..., :I].reshape(-1))
    assert np.array_equal(_streamed(b), fused[..., I:].reshape(-1))


def test_slice_outside_the_tensor_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        F.Sliced("w", (E, 2 * I, H), 1, I, 2 * I + 1)


# ---------------------------------------------------------------------------------------- copy and prefix


def test_copy_writes_one_source_under_several_names(tmp_path):
    rng = np.random.default_rng(6)
    w = rng.standard_normal((I, H), dtype=np.float32)
    handles = _write(tmp_path, {"model.embed_tokens.weight": w})
    maps = F.TensorMapping.copies(
        ["blk.4.nextn.embed_tokens.weight", "blk.5.nextn.embed_tokens.weight"], "model.embed_tokens.weight", (I, H)
    )
    assert [m.gguf_name for m in maps] == ["blk.4.nextn.embed_tokens.weight", "blk.5.nextn.embed_tokens.weight"]
    for m in maps:
        assert np.array_equal(_streamed(m.open(handles)), w.reshape(-1))


def test_prefix_is_data():
    spec = parse_config(family_config("exaone4"))
    names = F.families()["exaone4"].tensor_map(spec)
    from exaone_gguf.families.exaone4 import NAMES

    vl = replace(NAMES, prefix="model.language_model.").mappings(spec)
    assert [m.gguf_name for m in vl] == [m.gguf_name for m in names]
    assert vl[0].hf_name == "model.language_model.embed_tokens.weight"
    assert vl[1].hf_name.startswith("model.language_model.layers.0.")
    assert all(
        a.hf_name.replace("model.language_model.", "model.") == b.hf_name
        for a, b in zip(vl, names)
        if b.hf_name.startswith("model.")
    )


# ------------------------------------------------------------------------------------------- check_tensors


def _moe_checkpoint(tmp_path: Path, parts: dict[str, np.ndarray]) -> tuple[Checkpoint, object, list]:
    spec = parse_config(family_config("exaone4"))
    ckpt = Checkpoint(tmp_path, spec, _write(tmp_path, parts))
    maps = [F.TensorMapping.stacked("blk.0.ffn_gate_exps.weight", sorted(n for n in parts if "gate_proj" in n), (I, H))]
    return ckpt, F.families()["exaone4"], maps


def test_check_tensors_understands_stacked_sources(tmp_path):
    rng = np.random.default_rng(7)
    parts = _experts(rng)
    ckpt, fam, maps = _moe_checkpoint(tmp_path, parts)
    check_tensors(ckpt, fam, maps)  # every part is used, shapes as declared


def test_check_tensors_refuses_a_wrong_expert_shape(tmp_path):
    rng = np.random.default_rng(8)
    parts = _experts(rng)
    parts["model.layers.0.mlp.experts.2.gate_proj.weight"] = rng.standard_normal((I + 1, H), dtype=np.float32)
    ckpt, fam, _ = _moe_checkpoint(tmp_path, parts)
    maps = [F.TensorMapping.stacked("blk.0.ffn_gate_exps.weight", list(parts), (I, H))]
    with pytest.raises(
        InputError, match=r"experts\.2\.gate_proj\.weight' has shape \[7, 32\] but config.json implies \[6, 32\]"
    ):
        check_tensors(ckpt, fam, maps)


def test_check_tensors_refuses_an_expert_the_table_does_not_use(tmp_path):
    rng = np.random.default_rng(9)
    parts = _experts(rng, n=E + 1)
    ckpt, fam, _ = _moe_checkpoint(tmp_path, parts)
    maps = [F.TensorMapping.stacked("blk.0.ffn_gate_exps.weight", list(parts)[:E], (I, H))]
    with pytest.raises(InputError, match=rf"unexpected tensor 'model.layers.0.mlp.experts.{E}.gate_proj.weight'"):
        check_tensors(ckpt, fam, maps)


def test_check_tensors_refuses_a_missing_slice_source(tmp_path):
    rng = np.random.default_rng(10)
    ckpt, fam, _ = _moe_checkpoint(tmp_path, _experts(rng))
    maps = [F.TensorMapping.sliced("g", "experts.gate_up_proj", (E, 2 * I, H), 1, 0, I)]
    with pytest.raises(InputError, match="tensor 'experts.gate_up_proj' is missing"):
        check_tensors(ckpt, fam, maps)


def test_tiny_configs_keep_their_keys():
    """The recipes moved into the family modules: spot-check what make-tiny writes for each kind."""
    assert family_config("exaone3-awq")["quantization_config"]["quant_method"] == "awq"
    assert family_config("exaone3-awq")["_name_or_path"] == "exaone-gguf/tiny-exaone3-awq"
    assert family_config("llama-awq")["_name_or_path"] == "exaone-gguf/tiny-llama-awq"
    assert family_config("exaone-deep")["_name_or_path"] == "exaone-gguf/tiny-exaone-deep"
    assert family_config("exaone4-hybrid")["num_hidden_layers"] == 64
    with pytest.raises(InputError, match="unknown family 'exaone5'"):
        family_config("exaone5")
    json.dumps([family_config(n) for n in F.tiny_recipes()])


def test_family_extras_are_read_through_the_typed_reader(monkeypatch):
    """A family's own keys (here an expert count, as a MoE family will read it) land in spec.extras, with
    the same one-sentence errors, from a nested text_config too."""
    arch = "Exaone4ForCausalLM"
    reading = replace(F.registry.READINGS[arch], extras=lambda k: {"n_expert": k.int("num_experts")})
    monkeypatch.setitem(F.registry.READINGS, arch, reading)
    flat = family_config("exaone4")
    nested = {"architectures": [arch], "text_config": {**flat, "num_experts": 8}}
    assert parse_config(nested).extras == {"n_expert": 8}
    with pytest.raises(InputError, match=r"\(text_config\): key 'num_experts' must be positive, got 0"):
        parse_config({**nested, "text_config": {**flat, "num_experts": 0}})
    with pytest.raises(InputError, match="required key 'num_experts' is missing"):
        parse_config(flat)


def test_make_tiny_writes_every_source_of_a_mapping_once(monkeypatch):
    """make-tiny's weights follow the table's sources: each stacked part and a fused tensor get their own
    random tensor (distinct data), a copied tensor is written once."""
    from exaone_gguf.tiny import _weights

    spec = parse_config(family_config("exaone4"))
    parts = [f"model.layers.0.mlp.experts.{x}.gate_proj.weight" for x in range(3)]
    table = [
        F.TensorMapping.stacked("blk.0.ffn_gate_exps.weight", parts, (I, H)),
        F.TensorMapping.sliced("blk.0.ffn_up_exps.weight", "experts.gate_up_proj", (3, 2 * I, H), 1, I, 2 * I),
        *F.TensorMapping.copies(
            ["blk.1.nextn.eh_proj.weight", "blk.2.nextn.eh_proj.weight"], "mtp.eh_proj.weight", (H, H)
        ),
    ]
    monkeypatch.setitem(F.registry._FAMILIES, "exaone4", replace(F.families()["exaone4"], tensor_map=lambda s: table))
    sources = _weights(spec, 0, "F32")
    assert [(s.name, s.shape) for s in sources] == [(n, (I, H)) for n in parts] + [
        ("experts.gate_up_proj", (3, 2 * I, H)),
        ("mtp.eh_proj.weight", (H, H)),
    ]
    data = [np.concatenate([np.asarray(c).reshape(-1) for c in s.produce()]) for s in sources[:3]]
    assert not np.array_equal(data[0], data[1]) and not np.array_equal(data[1], data[2])


def test_tokenizer_pre_names_come_from_the_family(tiny_dir, monkeypatch):
    """tokenizer.ggml.pre is the name the family declares for what the tokenizer does (digits split or the
    GPT-2 regex); a family that declares none gets one sentence instead of a guessed name."""
    from exaone_gguf.checkpoint.spec import PreTokenizers
    from exaone_gguf.checkpoint.tokenizer import load_tokenizer

    assert F.load_checkpoint(tiny_dir("exaone3")).tokenizer.pre == F.BPE_PRE_TOKENIZERS.split_digits
    assert F.load_checkpoint(tiny_dir("exaone4")).tokenizer.pre == F.BPE_PRE_TOKENIZERS.gpt2_regex
    assert load_tokenizer(tiny_dir("exaone4"), PreTokenizers("a", "b")).pre == "b"
    arch = "Exaone4ForCausalLM"
    monkeypatch.setitem(F.registry.READINGS, arch, replace(F.registry.READINGS[arch], pre_tokenizers=None))
    with pytest.raises(InputError, match="declares no byte-level BPE pre-tokenizer"):
        F.load_checkpoint(tiny_dir("exaone4")).tokenizer
