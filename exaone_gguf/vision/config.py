"""The vision tower's settings, from config.json's `vision_config` and preprocessor_config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from exaone_gguf.errors import InputError
from exaone_gguf.families import families, family_of_architecture

# the vision tower is known by its own config type (the architecture name belongs to the family registry)
VISION_MODEL_TYPES = ("exaone4_5_vision",)
DEFAULT_IMAGE_SIZE = 560  # llama.cpp's Qwen2-VL converter writes this when the config has no image_size
DEFAULT_EPS = 1e-6  # transformers' vision RMSNorm epsilon (hard-coded there), llama.cpp's default too
DEFAULT_ROPE_THETA = 10000.0
# clip.cpp never reads clip.vision.window_size for exaone4_5 (nor qwen2.5vl): its graph windows 112 pixels a side
RUNTIME_WINDOW_SIZE = 112  # transformers' axial rope default; clip.cpp's default for exaone4_5


@dataclass(frozen=True)
class VisionSpec:
    """Everything the projector file and the reference forward need to know about the vision tower."""

    name: str
    architecture: str  # HF architectures[0]: its family declares the tower's tensor table (Family.vision_tower)
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    in_channels: int
    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    window_size: int
    fullatt_block_indexes: tuple[int, ...]
    out_hidden_size: int
    projection_dim: int  # the text model's hidden size (llama.cpp checks it against the text GGUF)
    eps: float
    rope_theta: float
    image_size: int
    min_pixels: int
    max_pixels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def n_wa_pattern(self) -> int:
        """llama.cpp's window pattern: block i attends globally when (i + 1) % n_wa_pattern == 0."""
        return self.fullatt_block_indexes[0] + 1


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: not found; {what}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e}); fix or re-download it.") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: must hold a JSON object.")
    return data


def is_vision_source(directory: Path | str) -> bool:
    """True when config.json names an EXAONE 4.5 vision-language checkpoint (a vision_config is present)."""
    path = Path(directory) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    vision = cfg.get("vision_config") if isinstance(cfg, dict) else None
    return isinstance(vision, dict) and vision.get("model_type") in VISION_MODEL_TYPES


def _int(cfg: dict, key: str, path: Path, where: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise InputError(f"{path}: {where}.{key} is {v!r}; it must be a positive integer.")
    return v


def check_window_pattern(fullatt: object, depth: int, path: Path) -> tuple[int, ...]:
    """fullatt_block_indexes must be the blocks k*n-1 (k = 1, 2, ...) of the depth: the only layout llama.cpp's
    one number n_wa_pattern can express (its converter refuses uneven spacing; a short list would make llama.cpp
    attend globally in blocks the source windows)."""
    if (
        not isinstance(fullatt, (list, tuple))
        or not fullatt
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in fullatt)
    ):
        raise InputError(
            f"{path}: vision_config.fullatt_block_indexes is {fullatt!r}; it must list the full-attention blocks."
        )
    n = fullatt[0] + 1
    expected = list(range(n - 1, depth, n)) if n > 0 else []
    if list(fullatt) != expected:
        raise InputError(
            f"{path}: vision_config.fullatt_block_indexes {list(fullatt)} are not evenly spaced every "
            f"{n} blocks of {depth} (expected {expected}); llama.cpp's n_wa_pattern cannot express this layout."
        )
    return tuple(fullatt)


def read_vision_spec(directory: Path | str) -> VisionSpec:
    """config.json's vision_config and preprocessor_config.json, checked; InputError names the file at fault."""
    directory = Path(directory)
    cfg_path = directory / "config.json"
    cfg = _read_json(cfg_path, "pass a Hugging Face checkpoint directory")
    v = cfg.get("vision_config")
    if not isinstance(v, dict) or v.get("model_type") not in VISION_MODEL_TYPES:
        found = f"a vision_config of model_type {v.get('model_type')!r}" if isinstance(v, dict) else "no vision_config"
        raise InputError(
            f"{cfg_path}: has {found}; --mmproj converts EXAONE 4.5's vision tower "
            f"(vision_config model_type {', '.join(VISION_MODEL_TYPES)})."
        )
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    fam = family_of_architecture(arch)
    if fam is None or fam.vision_tower is None:
        towers = [a for f in families().values() if f.vision_tower for a in f.architectures]
        raise InputError(
            f"{cfg_path}: architecture {arch!r} has no vision tower this tool converts; --mmproj converts "
            f"{', '.join(towers)}."
        )
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
    w = "vision_config"
    depth = _int(v, "depth", cfg_path, w)
    temporal = _int(v, "temporal_patch_size", cfg_path, w)
    if temporal != 2:
        raise InputError(
            f"{cfg_path}: vision_config.temporal_patch_size is {temporal}; llama.cpp's projector supports only 2."
        )
    merge = _int(v, "spatial_merge_size", cfg_path, w)
    if merge != 2:
        raise InputError(
            f"{cfg_path}: vision_config.spatial_merge_size is {merge}; llama.cpp's projector graph merges 2x2 only."
        )
    heads = _int(v, "num_heads", cfg_path, w)
    kv_heads = v.get("num_key_value_heads", heads)
    hidden = _int(v, "hidden_size", cfg_path, w)
    if not isinstance(kv_heads, int) or kv_heads <= 0 or heads % kv_heads or hidden % heads:
        raise InputError(
            f"{cfg_path}: vision_config has hidden_size {hidden}, num_heads {heads}, num_key_value_heads {kv_heads}; "
            "the heads must divide the hidden size and the key/value heads the heads."
        )
    projection_dim = text.get("hidden_size", cfg.get("hidden_size"))
    out_hidden = _int(v, "out_hidden_size", cfg_path, w)
    if projection_dim is not None and projection_dim != out_hidden:
        raise InputError(
            f"{cfg_path}: vision_config.out_hidden_size {out_hidden} differs from the text hidden size "
            f"{projection_dim}; the projector's output must match the text model."
        )
    window = _int(v, "window_size", cfg_path, w)
    if window != RUNTIME_WINDOW_SIZE:
        raise InputError(
            f"{cfg_path}: vision_config.window_size is {window}; llama.cpp's exaone4_5 projector always windows "
            f"{RUNTIME_WINDOW_SIZE} pixels (it ignores the key), so this tower would run wrongly there."
        )
    rope = v.get("rope_parameters") or {}
    theta = float(rope.get("rope_theta", v.get("rope_theta", DEFAULT_ROPE_THETA)))
    if theta != DEFAULT_ROPE_THETA:
        raise InputError(
            f"{cfg_path}: vision rope_theta is {theta}; llama.cpp's exaone4_5 projector runs {DEFAULT_ROPE_THETA} only."
        )
    pre_path = directory / "preprocessor_config.json"
    pre = _read_json(pre_path, "--mmproj needs the image processor's settings (min/max pixels, mean, std)")
    for key in ("min_pixels", "max_pixels"):
        if isinstance(pre.get(key), bool) or not isinstance(pre.get(key), int) or pre[key] <= 0:
            raise InputError(f"{pre_path}: {key} is {pre.get(key)!r}; it must be a positive integer.")
    for key in ("image_mean", "image_std"):
        val = pre.get(key)
        if not isinstance(val, list) or len(val) != 3 or not all(isinstance(x, (int, float)) for x in val):
            raise InputError(f"{pre_path}: {key} is {val!r}; it must be a list of three numbers.")
    return VisionSpec(
        name=str(cfg.get("_name_or_path") or directory.resolve().name),
        architecture=arch,
        depth=depth,
        hidden_size=hidden,
        intermediate_size=_int(v, "intermediate_size", cfg_path, w),
        num_heads=heads,
        num_kv_heads=kv_heads,
        in_channels=v.get("in_channels", 3),
        patch_size=_int(v, "patch_size", cfg_path, w),
        spatial_merge_size=merge,
        temporal_patch_size=temporal,
        window_size=window,
        fullatt_block_indexes=check_window_pattern(v.get("fullatt_block_indexes"), depth, cfg_path),
        out_hidden_size=out_hidden,
        projection_dim=int(projection_dim or out_hidden),
        eps=float(v.get("rms_norm_eps", cfg.get("rms_norm_eps", DEFAULT_EPS))),
        rope_theta=theta,
        image_size=int(v.get("image_size", DEFAULT_IMAGE_SIZE)),
        min_pixels=pre["min_pixels"],
        max_pixels=pre["max_pixels"],
        image_mean=tuple(float(x) for x in pre["image_mean"]),
        image_std=tuple(float(x) for x in pre["image_std"]),
    )
