"""Per-tensor type choice of llama.cpp's quantizer (src/llama-quant.cpp, llama-cpp-python 0.3.36).

Re-implements, for dense models and the file types in formats.FILE_TYPES:
`tensor_allows_quantization` (which tensors are quantized at all), `llama_tensor_get_type_impl`
(the mixture rules: output/token_embd, attn_v with its use_more_bits counter, ffn_down, ...)
and `tensor_type_fallback` (rows that are not whole blocks). The counters make the result
depend on tensor order, so tensors are visited in llama.cpp's order (`weight_name_comparer`:
non-block tensors first, then by block number, then by name), whatever order they are given in.
MoE rules (n_expert > 1: ffn_down's layer from the block number; n_expert == 8: attn_v / attn_k to Q8_0 and
attn_output to Q5_K for the low-bit types) are modelled for our file types; Falcon rules are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from gguf import GGMLQuantizationType, GGUFValueType

from exaone_gguf.quantize.formats import block_size, file_type, is_quantized

T = GGMLQuantizationType

# Substrings that keep a "*weight" tensor out of quantization (tensor_allows_quantization).
_NEVER_QUANTIZE = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)
_NEVER_QUANTIZE_EXACT = ("position_embd.weight", "token_types.weight")

# tensor_type_fallback: a 256-block type whose row is not whole blocks goes to a 32-block type.
_FALLBACK = {
    T.IQ1_S: T.IQ4_NL,
    T.IQ1_M: T.IQ4_NL,
    T.IQ2_XXS: T.IQ4_NL,
    T.IQ2_XS: T.IQ4_NL,
    T.IQ2_S: T.IQ4_NL,
    T.IQ3_XXS: T.IQ4_NL,
    T.IQ3_S: T.IQ4_NL,
    T.IQ4_XS: T.IQ4_NL,
    T.Q2_K: T.Q4_0,
    T.Q3_K: T.Q4_0,
    T.TQ1_0: T.Q4_0,
    T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0,
    T.Q5_K: T.Q5_1,
    T.Q6_K: T.Q8_0,
}

_BLK = re.compile(r"blk\.(-?\d+)\.")


def file_type_value(ftype: str) -> int:
    """The integer llama.cpp writes to general.file_type for a CLI file-type name."""
    return int(file_type(ftype).ftype)


def n_dims(ne: Sequence[int]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count (a [n, 1] tensor is 1-D)."""
    for i in range(len(ne) - 1, 0, -1):
        if ne[i] > 1:
            return i + 1
    return 1


def allows_quantization(name: str, ne: Sequence[int], leave_output_tensor: bool = False) -> bool:
    """tensor_allows_quantization (`leave_output_tensor`: llama-quantize's --leave-output-tensor)."""
    if n_dims(ne) < 2 or not name.endswith("weight"):
        return False
    if leave_output_tensor and name == "output.weight":
        return False
    if name in _NEVER_QUANTIZE_EXACT:
        return False
    return not any(s in name for s in _NEVER_QUANTIZE)


def _category(name: str) -> str:
    """tensor_get_category: first match wins, substring tests as in llama.cpp."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (
        ("attn_qkv.weight", "attn_v"),
        ("attn_kv_b.weight", "attn_v"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if key in name:
            return cat
    return "other"


def _order_key(name: str) -> tuple[int, str]:
    m = _BLK.match(name)
    return (int(m.group(1)) if m else -1, name)


def _block_of(name: str) -> int:
    m = _BLK.match(name)
    if m is None:
        raise ValueError(f"Failed to determine layer for tensor {name}")
    return int(m.group(1))


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass
class _State:
    ftype: str
    arch: str
    n_layers: int
    n_gqa: int | None
    is_70b: bool
    has_imatrix: bool
    tied: bool
    n_attention_wv: int
    n_expert: int = 1
    output_tensor_type: T | None = None
    i_attention_wv: int = 0
    i_ffn_down: int = 0

    def gqa(self) -> int:
        if self.n_gqa is None:
            raise ValueError(f"the {self.ftype} mixture depends on n_head/n_head_kv; pass n_gqa")
        return self.n_gqa


def _mixture_type(st: _State, new: T, name: str, ne: Sequence[int], cat: str) -> T:
    """llama_tensor_get_type_impl for dense, non-Falcon models and our file types."""
    ft = st.ftype
    if cat == "output" or (st.tied and cat == "token_embd"):
        if st.output_tensor_type is not None:
            return st.output_tensor_type
        if ne[0] % block_size(new) != 0:
            return T.Q8_0
        return new if new == T.Q8_0 else T.Q6_K
    if cat == "token_embd":
        return new  # only IQ1/IQ2/IQ3_XXS/TQ file types change an untied token_embd
    if cat == "attn_v":  # also attn_qkv and attn_kv_b
        i, n = st.i_attention_wv, st.n_attention_wv
        if ft == "q2_k":
            new = T.Q4_K if st.gqa() >= 4 else T.Q3_K
        elif ft == "q3_k_m":
            new = T.Q5_K if i < 2 else T.Q4_K
        elif ft == "iq4_xs":
            if st.gqa() >= 4:
                new = T.Q5_K
        elif ft in ("q4_k_m", "q5_k_m") and _use_more_bits(i, n):
            new = T.Q6_K
        elif ft == "q4_k_s" and i < 4:
            new = T.Q5_K
        if st.is_70b and new in (T.Q3_K, T.Q4_K):
            new = T.Q5_K  # 8 heads share attn_v in 70B models: more bits cost little
        if st.n_expert == 8:
            new = T.Q8_0  # llama.cpp: "for the 8-expert model, bumping this to Q8_0 trades just ~128MB"
        st.i_attention_wv += 1
        return new
    if cat == "attn_k":
        return T.Q8_0 if st.n_expert == 8 else new
    if cat == "ffn_down":
        # dense: the counter; MoE: the block number in the name (experts need not be consecutive)
        i, n = (_block_of(name), st.n_layers) if st.n_expert > 1 else (st.i_ffn_down, st.n_layers)
        if ft == "q2_k":
            new = T.Q3_K
        elif ft == "q3_k_m":
            new = T.Q5_K if i < n // 16 else T.Q4_K
        elif ft == "q4_k_m":
            if _use_more_bits(i, n):
                new = T.Q6_K
        elif ft == "iq4_xs" and i < n // 8 and not st.has_imatrix:
            new = T.Q5_K
        elif ft == "q5_k_m" and _use_more_bits(i, n):
            new = T.Q6_K
        elif ft == "q4_k_s" and i < n // 8:
            new = T.Q5_K
        elif ft in ("q4_0", "q5_0") and st.has_imatrix and i < n // 8:
            new = T.Q4_1 if ft == "q4_0" else T.Q5_1
        st.i_ffn_down += 1
        return new
    if cat == "attn_output":
        if st.n_expert == 8:
            return T.Q5_K if ft in ("q2_k", "q3_k_m", "q4_k_s", "q4_k_m", "iq4_xs") else new
        if ft == "q2_k":
            return T.Q3_K
        if ft == "q3_k_m":
            return T.Q4_K
    return new


def _fallback(new: T, ncols: int) -> T:
    """tensor_type_fallback."""
    if ncols % block_size(new) == 0:
        return new
    if new in _FALLBACK:
        ret = _FALLBACK[new]
    elif block_size(new) <= 32:
        ret = new
    else:
        raise ValueError(f"no tensor type fallback is defined for type {new.name}")
    return ret if ncols % block_size(ret) == 0 else T.F16


def _is_70b(arch: str, n_layers: int, n_gqa: int | None) -> bool:
    if n_layers != 80:
        return False
    if arch == "llama":
        return n_gqa is not None and n_gqa != 1
    return arch in ("qwen2", "deci", "olmo")


@dataclass(frozen=True)
class TypeOverrides:
    """llama-quantize's per-tensor controls (llama_model_quantize_params): `tensor_types` are
    (regex, type) pairs tried in order with regex_search semantics (first match wins, patterns
    lower-cased as quantize.cpp does); `output_tensor_type` / `token_embedding_type` replace the
    mixture's choice for output.weight / token_embd.weight; `pure` turns the mixture rules off;
    `leave_output_tensor` keeps output.weight in its source type."""

    tensor_types: tuple[tuple[str, GGMLQuantizationType], ...] = ()
    output_tensor_type: GGMLQuantizationType | None = None
    token_embedding_type: GGMLQuantizationType | None = None
    pure: bool = False
    leave_output_tensor: bool = False

    def __bool__(self) -> bool:
        return (
            bool(self.tensor_types)
            or self.output_tensor_type is not None
            or (self.token_embedding_type is not None)
            or self.pure
            or self.leave_output_tensor
        )

    def to_dict(self) -> dict:
        return {
            "tensor_types": [f"{p}={t.name.lower()}" for p, t in self.tensor_types],
            "output_tensor_type": self.output_tensor_type.name.lower() if self.output_tensor_type is not None else None,
            "token_embedding_type": (
                self.token_embedding_type.name.lower() if self.token_embedding_type is not None else None
            ),
            "pure": self.pure,
            "leave_output_tensor": self.leave_output_tensor,
        }


# The keys that record the request a file's tensor types were planned from (our convert and quantize write them;
# llama.cpp's tools do not), so that validate rebuilds the exact plan: the file type it was made as and
# llama-quantize's per-tensor controls, each key present also when its control was not given.
PLAN = "quantize.plan."
PlanKey = tuple[str, GGUFValueType, Any, "GGUFValueType | None"]


def plan_keys(ftype: int, ov: TypeOverrides | None) -> list[PlanKey]:
    """quantize.plan.* for a file of general.file_type `ftype` planned with `ov`."""
    ov = ov or TypeOverrides()
    name = lambda t: t.name.lower() if t is not None else ""  # noqa: E731
    S, B = GGUFValueType.STRING, GGUFValueType.BOOL
    return [
        (PLAN + "file_type", GGUFValueType.UINT32, int(ftype), None),
        (PLAN + "tensor_types", GGUFValueType.ARRAY, [f"{p}={t.name.lower()}" for p, t in ov.tensor_types], S),
        (PLAN + "output_tensor_type", S, name(ov.output_tensor_type), None),
        (PLAN + "token_embedding_type", S, name(ov.token_embedding_type), None),
        (PLAN + "pure", B, bool(ov.pure), None),
        (PLAN + "leave_output_tensor", B, bool(ov.leave_output_tensor), None),
    ]


def read_plan(get: Callable[[str], Any]) -> tuple[int, TypeOverrides] | None:
    """(general.file_type the plan was made for, its per-tensor controls) from a file's quantize.plan.* keys
    (`get`: key -> value or None); None when the file carries none. ValueError for a record that does not parse."""
    ftype = get(PLAN + "file_type")
    if ftype is None:
        return None
    kind = lambda v: GGMLQuantizationType[v.upper()] if v else None  # noqa: E731
    try:
        ov = TypeOverrides(
            tensor_types=tuple(
                (p, GGMLQuantizationType[t.upper()])
                for p, _, t in (x.rpartition("=") for x in get(PLAN + "tensor_types") or [])
            ),
            output_tensor_type=kind(get(PLAN + "output_tensor_type")),
            token_embedding_type=kind(get(PLAN + "token_embedding_type")),
            pure=bool(get(PLAN + "pure")),
            leave_output_tensor=bool(get(PLAN + "leave_output_tensor")),
        )
    except KeyError as e:
        raise ValueError(f"{PLAN}* names an unknown tensor type {e}") from None
    return int(ftype), ov


def parse_ggml_type(text: str, flag: str) -> GGMLQuantizationType:
    """A ggml type name (case-insensitive, as quantize.cpp's parse_ggml_type) that this package can write."""
    from exaone_gguf.errors import InputError
    from exaone_gguf.quantize.formats import SUPPORTED_TYPES

    for t in SUPPORTED_TYPES:
        if t.name.lower() == text.strip().lower():
            return t
    names = ", ".join(sorted(t.name.lower() for t in SUPPORTED_TYPES))
    raise InputError(f"{flag} {text!r}: not a tensor type this tool writes; use one of: {names}.")


def parse_tensor_types(items: Iterable[str]) -> tuple[tuple[str, GGMLQuantizationType], ...]:
    """--tensor-type PATTERN=TYPE items -> ((pattern, type), ...), as quantize.cpp's parse_tensor_type:
    split at the first '=', the pattern lower-cased; a pattern that is not a valid regex is refused."""
    from exaone_gguf.errors import InputError

    out = []
    for item in items:
        pattern, sep, qtype = item.partition("=")
        if not sep or not pattern or not qtype:
            raise InputError(
                f"--tensor-type {item!r}: write PATTERN=TYPE, e.g. attn_v=q8_0 or 'blk\\.[0-3]\\.ffn_down=q6_k'."
            )
        pattern = pattern.lower()
        try:
            re.compile(pattern)
        except re.error as e:
            raise InputError(f"--tensor-type {item!r}: {pattern!r} is not a valid regular expression ({e}).") from None
        out.append((pattern, parse_ggml_type(qtype, "--tensor-type")))
    return tuple(out)


TensorSpec = tuple  # (name, ne) or (name, ne, source_type)


def plan_types(
    tensors: Iterable[TensorSpec],
    ftype: str,
    arch: str,
    n_layers: int,
    *,
    n_gqa: int | None = None,
    has_imatrix: bool = False,
    n_expert: int = 1,
    overrides: TypeOverrides | None = None,
) -> dict[str, GGMLQuantizationType]:
    """The type llama_model_quantize gives each tensor for file type `ftype` (a CLI name).

    `tensors`: (GGUF name, ne) pairs, ne[0] = row length, optionally with the source type as a
    third item (tensors that are not quantized keep it; default F32). `n_layers`: block_count
    (incl. NextN blocks). `n_gqa` = n_head // n_head_kv: needed by q2_k and iq4_xs (attn_v rule)
    and for llama 70B detection. `has_imatrix`: whether an importance matrix will be used. `n_expert`:
    {arch}.expert_count (MoE rules when > 1).
    `overrides`: llama-quantize's per-tensor controls (llama_tensor_get_type's outer wrapper).
    Returns {name: type} in the order given.
    """
    ov = overrides or TypeOverrides()
    ft = file_type(ftype)
    items = [(t[0], tuple(int(v) for v in t[1]), T(t[2]) if len(t) > 2 else T.F32) for t in tensors]
    names = [name for name, _, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names")
    st = _State(
        ftype=ft.name,
        arch=arch,
        n_layers=n_layers,
        n_gqa=n_gqa,
        is_70b=_is_70b(arch, n_layers, n_gqa),
        has_imatrix=has_imatrix,
        tied="output.weight" not in names,
        n_attention_wv=sum(_category(n) == "attn_v" for n in names),
        n_expert=max(1, int(n_expert or 1)),
        output_tensor_type=ov.output_tensor_type,
    )
    patterns = [(re.compile(p), t) for p, t in ov.tensor_types]
    out: dict[str, GGMLQuantizationType] = {}
    for name, ne, src in sorted(items, key=lambda it: _order_key(it[0])):
        if not allows_quantization(name, ne, ov.leave_output_tensor):
            out[name] = src
            continue
        cat = _category(name)
        named = name == "per_layer_token_embd.weight" and any(p.search(name) for p, _ in patterns)
        if ov.token_embedding_type is not None and cat == "token_embd" and not named:
            out[name] = ov.token_embedding_type
            continue
        if ov.output_tensor_type is not None and cat == "output":
            out[name] = ov.output_tensor_type
            continue
        new = ft.default_type
        if is_quantized(new):
            manual = next((t for p, t in patterns if p.search(name)), None)
            if manual is not None:
                new = manual
            elif not ov.pure:
                new = _mixture_type(st, new, name, ne, cat)
            new = _fallback(new, ne[0])
        out[name] = new
    return {name: out[name] for name in names}
