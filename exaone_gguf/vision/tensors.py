"""The vision tower's tensors: Hugging Face name -> llama.cpp's mmproj name, shape and storage rule.

The layout is Qwen2-VL's mmproj (llama.cpp conversion/qwenvl.py, conversion/exaone.py): the conv3d patch kernel
[hidden, C, 2, P, P] becomes two conv2d kernels, `v.patch_embd.weight` (temporal slice 0) and `.weight.1`
(slice 1); the fused `attn.qkv` passes through as `attn_qkv`; the merger's RMS norm is `v.post_ln` and its MLP
`mm.0` / `mm.2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gguf
from gguf import GGMLQuantizationType as T

from exaone_gguf.families import family_of_architecture
from exaone_gguf.vision.config import VisionSpec

PROJECTOR_TYPE = "exaone4_5"  # gguf 0.19 has no VisionProjectorType for it; clip.cpp's PROJECTOR_TYPE_EXAONE4_5
HF_PREFIXES = ("model.visual.", "visual.")
PATCH = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH]  # "v.patch_embd"
_BLOCK = {
    "norm1.weight": (gguf.MODEL_TENSOR.V_ENC_INPUT_NORM, "weight"),
    "norm2.weight": (gguf.MODEL_TENSOR.V_ENC_POST_ATTN_NORM, "weight"),
    "attn.qkv.weight": (gguf.MODEL_TENSOR.V_ENC_ATTN_QKV, "weight"),
    "attn.qkv.bias": (gguf.MODEL_TENSOR.V_ENC_ATTN_QKV, "bias"),
    "attn.proj.weight": (gguf.MODEL_TENSOR.V_ENC_ATTN_O, "weight"),
    "attn.proj.bias": (gguf.MODEL_TENSOR.V_ENC_ATTN_O, "bias"),
    "mlp.gate_proj.weight": (gguf.MODEL_TENSOR.V_ENC_FFN_GATE, "weight"),
    "mlp.gate_proj.bias": (gguf.MODEL_TENSOR.V_ENC_FFN_GATE, "bias"),
    "mlp.up_proj.weight": (gguf.MODEL_TENSOR.V_ENC_FFN_UP, "weight"),
    "mlp.up_proj.bias": (gguf.MODEL_TENSOR.V_ENC_FFN_UP, "bias"),
    "mlp.down_proj.weight": (gguf.MODEL_TENSOR.V_ENC_FFN_DOWN, "weight"),
    "mlp.down_proj.bias": (gguf.MODEL_TENSOR.V_ENC_FFN_DOWN, "bias"),
}
_MERGER = {
    "merger.ln_q.weight": f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_POST_NORM]}.weight",
    "merger.mlp.0.weight": f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MMPROJ].format(bid=0)}.weight",
    "merger.mlp.0.bias": f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MMPROJ].format(bid=0)}.bias",
    "merger.mlp.2.weight": f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MMPROJ].format(bid=2)}.weight",
    "merger.mlp.2.bias": f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MMPROJ].format(bid=2)}.bias",
}


@dataclass(frozen=True)
class VisionTensor:
    """One GGUF tensor of the projector file: from source tensor `hf` (its temporal slice `temporal` for the
    patch kernel), with torch shape `shape` (GGUF's ne is the reverse)."""

    gguf_name: str
    hf: str
    shape: tuple[int, ...]
    temporal: int | None = None

    @property
    def ne(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))

    @property
    def n_cols(self) -> int:
        return self.shape[-1]

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[:-1]) if len(self.shape) > 1 else 1

    def storage_type(self, outtype: str) -> T:
        """llama.cpp's converter rule (MmprojModel.tensor_force_quant and prepare_tensors): 1-D tensors and norms
        F32; the patch kernels F16 in an F16 file and F32 otherwise; other weights the file's type, Q8_0 rows that
        are not whole blocks F16."""
        if len(self.shape) <= 1 or self.gguf_name.endswith(("ln1.weight", "ln2.weight", "post_ln.weight")):
            return T.F32
        if self.gguf_name.startswith(PATCH + "."):
            return T.F16 if outtype == "f16" else T.F32
        qtype = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0}[outtype]
        if qtype == T.Q8_0 and self.n_cols % gguf.GGML_QUANT_SIZES[T.Q8_0][0]:
            return T.F16
        return qtype


def expected_shapes(spec: VisionSpec) -> dict[str, tuple[int, ...]]:
    """Source tensor (without prefix) -> its torch shape, as the config implies (the family's own table, which
    also tells the text converter which tensors to leave to the projector)."""
    return family_of_architecture(spec.architecture).vision_tower(spec)


def gguf_names_of(short: str) -> list[str]:
    """The GGUF tensor name(s) one source tensor (prefix stripped) becomes."""
    if short == "patch_embed.proj.weight":
        return [f"{PATCH}.weight", f"{PATCH}.weight.1"]
    if short in _MERGER:
        return [_MERGER[short]]
    _, bid, rest = short.split(".", 2)
    kind, suffix = _BLOCK[rest]
    return [f"{gguf.TENSOR_NAMES[kind].format(bid=int(bid))}.{suffix}"]


def tensor_table(spec: VisionSpec, prefix: str) -> list[VisionTensor]:
    """Every projector tensor in llama.cpp's converter order (source names sorted, as it reads them)."""
    shapes = expected_shapes(spec)
    table = []
    for short in sorted(shapes, key=lambda s: prefix + s):
        shape = shapes[short]
        if short == "patch_embed.proj.weight":
            kernel = (shape[0], shape[1], shape[3], shape[4])
            table += [VisionTensor(n, prefix + short, kernel, t) for t, n in enumerate(gguf_names_of(short))]
        else:
            table.append(VisionTensor(gguf_names_of(short)[0], prefix + short, shape))
    return table
