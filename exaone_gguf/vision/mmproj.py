"""Write the projector GGUF (`clip`, projector type exaone4_5) from an EXAONE 4.5 checkpoint, streamed and atomic
through gguf_io's writer, with llama.cpp's keys (conversion/exaone.py Exaone4_5VisionModel) and storage types."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from gguf import GGML_QUANT_VERSION, GGMLQuantizationType, GGUFType, GGUFValueType, Keys, LlamaFileType
from gguf.utility import size_label

from exaone_gguf.checkpoint import TensorHandle, load_tensors
from exaone_gguf.checkpoint.finite import check_finite
from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io.writer import (
    GGUFPlan,
    Output,
    PlannedTensor,
    check_output_path,
    write_gguf,
    write_outputs,
    write_plan,
)
from exaone_gguf.quantize.kernels import quantize
from exaone_gguf.vision.config import VisionSpec, is_vision_source, read_vision_spec
from exaone_gguf.vision.tensors import HF_PREFIXES, PROJECTOR_TYPE, VisionTensor, expected_shapes, tensor_table

OUTTYPES = {
    "f32": LlamaFileType.ALL_F32,
    "f16": LlamaFileType.MOSTLY_F16,
    "bf16": LlamaFileType.MOSTLY_BF16,
    "q8_0": LlamaFileType.MOSTLY_Q8_0,
}
DEFAULT_OUTTYPE = "f16"  # llama.cpp's converter default, and what a release ships
CHUNK_BYTES = 16 << 20  # float32 bytes converted per step
N_WA_PATTERN_KEY = Keys.ClipVision.N_WA_PATTERN
HEAD_COUNT_KV = Keys.ClipVision.Attention.HEAD_COUNT + "_kv"  # clip.cpp KEY_N_HEAD_KV; not in gguf 0.19


@dataclass
class MmprojResult:
    output: Path
    outtype: str
    file_type: int
    n_tensors: int
    n_params: int
    file_size: int
    arch: str = "clip"
    tensor_types: dict[str, str] = field(default_factory=dict)
    nonfinite: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["output"] = str(self.output)
        d["projector_type"] = PROJECTOR_TYPE
        return d


def mmproj_file_name(basename: str, outtype: str = DEFAULT_OUTTYPE) -> str:
    """The release's projector file name: llama.cpp's `mmproj-{name}-{TYPE}.gguf` (e.g. mmproj-EXAONE-4.5-33B-F16)."""
    return f"mmproj-{basename}-{outtype.upper()}.gguf"


def normalize_outtype(outtype: str) -> str:
    t = (outtype or "auto").strip().lower()
    if t == "auto":
        return DEFAULT_OUTTYPE
    if t not in OUTTYPES:
        raise InputError(f"--outtype {outtype}: a projector file takes one of {', '.join(OUTTYPES)} (or auto = f16).")
    return t


def source_prefix(tensors: dict[str, TensorHandle], directory: Path) -> str:
    for prefix in HF_PREFIXES:
        if any(n.startswith(prefix) for n in tensors):
            return prefix
    raise InputError(f"{directory}: no vision tensors (model.visual.*) in the safetensors files; nothing to convert.")


def check_source_tensors(spec: VisionSpec, tensors: dict[str, TensorHandle], prefix: str, directory: Path) -> None:
    """Every tensor the vision config implies, with its shape, and no unexplained vision tensor."""
    shapes = expected_shapes(spec)
    for short, shape in shapes.items():
        h = tensors.get(prefix + short)
        if h is None:
            raise InputError(f"{directory}: tensor '{prefix + short}' is missing; the checkpoint is incomplete.")
        if tuple(h.shape) != shape:
            raise InputError(
                f"{h.file.path}: tensor '{prefix + short}' has shape {list(h.shape)} but config.json's vision_config "
                f"implies {list(shape)}; the weights and config do not match."
            )
    extra = sorted(n for n in tensors if n.startswith(prefix) and n[len(prefix) :] not in shapes)
    if extra:
        raise InputError(
            f"{tensors[extra[0]].file.path}: vision tensor '{extra[0]}' is not part of EXAONE 4.5's tower."
        )


def source_rows(h: TensorHandle, temporal: int | None, start: int, stop: int) -> np.ndarray:
    """float32 rows [start, stop) of the GGUF tensor made from `h` (the temporal slice of the patch kernel)."""
    x = h.to_f32(start, stop)
    if temporal is not None:
        x = x[:, :, temporal]
    return np.ascontiguousarray(x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1), dtype=np.float32)


def _producer(h: TensorHandle, t: VisionTensor, qtype: GGMLQuantizationType) -> Callable[[], Iterator[np.ndarray]]:
    def produce() -> Iterator[np.ndarray]:
        if len(t.shape) <= 1:
            yield quantize(source_rows(h, None, 0, None), qtype).reshape(-1)
            return
        per_row = max(1, math.prod(h.shape[1:]) * 4)
        step = max(1, CHUNK_BYTES // per_row)
        for start in range(0, h.shape[0], step):
            stop = min(h.shape[0], start + step)
            yield quantize(source_rows(h, t.temporal, start, stop), qtype).reshape(-1)
            h.release(start, stop)

    return produce


def add_vision_keys(plan: GGUFPlan, spec: VisionSpec, outtype: str, n_params: int) -> None:
    """Every key llama.cpp's converter writes for this projector, in its order."""
    cv, att = Keys.ClipVision, Keys.ClipVision.Attention
    plan.add_string(Keys.General.ARCHITECTURE, "clip")
    plan.add_string(Keys.General.TYPE, GGUFType.MMPROJ)
    plan.add_string(Keys.General.NAME, spec.name)
    plan.add_string(Keys.General.SIZE_LABEL, size_label(n_params, 0, 0, 0))
    plan.add_u32(Keys.General.FILE_TYPE, int(OUTTYPES[outtype]))
    plan.add_bool(Keys.Clip.HAS_VISION_ENCODER, True)
    plan.add_u32(cv.PROJECTION_DIM, spec.projection_dim)
    plan.add_u32(cv.IMAGE_SIZE, spec.image_size)
    plan.add_u32(cv.PATCH_SIZE, spec.patch_size)
    plan.add_u32(cv.EMBEDDING_LENGTH, spec.hidden_size)
    plan.add_u32(cv.FEED_FORWARD_LENGTH, spec.intermediate_size)
    plan.add_u32(cv.BLOCK_COUNT, spec.depth)
    plan.add_u32(att.HEAD_COUNT, spec.num_heads)
    plan.add_array(cv.IMAGE_MEAN, GGUFValueType.FLOAT32, list(spec.image_mean))
    plan.add_array(cv.IMAGE_STD, GGUFValueType.FLOAT32, list(spec.image_std))
    plan.add_string(Keys.Clip.PROJECTOR_TYPE, PROJECTOR_TYPE)
    plan.add_bool(cv.USE_SILU, True)
    plan.add_u32(cv.IMAGE_MIN_PIXELS, spec.min_pixels)
    plan.add_u32(cv.IMAGE_MAX_PIXELS, spec.max_pixels)
    plan.add_u32(HEAD_COUNT_KV, spec.num_kv_heads)
    plan.add_f32(att.LAYERNORM_EPS, spec.eps)
    plan.add_u32(cv.WINDOW_SIZE, spec.window_size)
    plan.add_u32(N_WA_PATTERN_KEY, spec.n_wa_pattern)
    plan.add_u32(cv.SPATIAL_MERGE_SIZE, spec.spatial_merge_size)
    plan.add_u32(Keys.General.QUANTIZATION_VERSION, GGML_QUANT_VERSION)


def plan_mmproj(directory: Path | str, outtype: str = DEFAULT_OUTTYPE) -> tuple[GGUFPlan, VisionSpec, MmprojResult]:
    """Read and check the source, then plan every key and tensor of the projector file (no bytes yet)."""
    directory = Path(directory)
    outtype = normalize_outtype(outtype)
    spec = read_vision_spec(directory)
    tensors = load_tensors(directory)
    prefix = source_prefix(tensors, directory)
    check_source_tensors(spec, tensors, prefix, directory)
    table = tensor_table(spec, prefix)
    plan = GGUFPlan()
    result = MmprojResult(
        Path(), outtype, int(OUTTYPES[outtype]), len(table), sum(math.prod(t.shape) for t in table), 0
    )
    add_vision_keys(plan, spec, outtype, result.n_params)
    for t in table:
        qtype = t.storage_type(outtype)
        plan.add_tensor(t.gguf_name, t.ne, qtype, _producer(tensors[t.hf], t, qtype))
        result.tensor_types[t.gguf_name] = qtype.name
    check_finite({t.hf: tensors[t.hf] for t in table})  # NaN or infinity: refused before a byte is written
    return plan, spec, result


def convert_mmproj(
    src: Path | str,
    out: Path | str,
    outtype: str = DEFAULT_OUTTYPE,
    force: bool = False,
    progress: Callable[[PlannedTensor, int], None] | None = None,
    on_plan: Callable[[GGUFPlan], None] | None = None,
) -> MmprojResult:
    """`exaone-gguf convert SRC --mmproj -o OUT.gguf`: the vision tower as llama.cpp's projector file."""
    src, out = Path(src), Path(out)
    check_output_path(out, [src], force)
    plan, _, result = plan_mmproj(src, outtype)
    if on_plan:
        on_plan(plan)
    result.output = out
    result.file_size = write_gguf(plan, out, progress)
    return result


def source_weights(directory: Path | str) -> tuple[VisionSpec, Callable[[str], np.ndarray]]:
    """The source's vision tensors under the projector file's names, float32 in numpy layout (the patch kernel
    split into its temporal halves as in the file): `get(name)` for the reference forward."""
    directory = Path(directory)
    spec = read_vision_spec(directory)
    tensors = load_tensors(directory)
    prefix = source_prefix(tensors, directory)
    check_source_tensors(spec, tensors, prefix, directory)
    table = {t.gguf_name: t for t in tensor_table(spec, prefix)}

    def get(name: str) -> np.ndarray:
        t = table[name]
        x = tensors[t.hf].to_f32()
        if t.temporal is not None:
            x = x[:, :, t.temporal]
        return np.ascontiguousarray(x, dtype=np.float32).reshape(t.shape)

    return spec, get


RELEASE_OUTTYPE = "f16"  # the projector a release ships: llama.cpp's default, what LG and other publishers ship


def release_projector_path(src: Path | str, out_dir: Path | str, title: str) -> Path | None:
    """Where a release of `src` puts its projector (`mmproj-{title}-F16.gguf`, `title` as the text files'
    `{Basename}-{Size}`), or None when `src` has no vision tower."""
    if not is_vision_source(src):
        return None
    read_vision_spec(src)  # a vision config llama.cpp cannot run is refused before any file of the release is written
    return Path(out_dir) / mmproj_file_name(title, RELEASE_OUTTYPE)


def write_release_projector(
    src: Path | str, path: Path, progress: Callable[[PlannedTensor, int], None] | None = None
) -> tuple[MmprojResult, str]:
    """Write the release's projector to `path` (checked by the caller) hashing every byte as it goes:
    (the result, its sha256 for the manifest)."""
    plan, _, result = plan_mmproj(src, RELEASE_OUTTYPE)
    output = Output([plan], [Path(path)])
    [size] = write_outputs([output], lambda sinks: write_plan(sinks[0], plan, progress), hash=True)
    result.output, result.file_size = Path(path), size
    return result, output.sha256[Path(path)]
