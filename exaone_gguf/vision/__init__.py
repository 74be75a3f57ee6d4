"""EXAONE 4.5's vision tower as llama.cpp's projector file (mmproj): config, tensor table, writer.

It sits between convert and families: it reads the checkpoint (config.json, preprocessor_config.json,
safetensors) and writes a `clip` GGUF with projector type `exaone4_5` through gguf_io's one writer.
"""

from exaone_gguf.vision.config import VisionSpec, is_vision_source, read_vision_spec
from exaone_gguf.vision.mmproj import (
    MmprojResult,
    convert_mmproj,
    mmproj_file_name,
    plan_mmproj,
    release_projector_path,
    source_weights,
    write_release_projector,
)
from exaone_gguf.vision.tensors import PROJECTOR_TYPE, tensor_table

__all__ = [
    "PROJECTOR_TYPE",
    "MmprojResult",
    "VisionSpec",
    "convert_mmproj",
    "is_vision_source",
    "mmproj_file_name",
    "plan_mmproj",
    "read_vision_spec",
    "release_projector_path",
    "source_weights",
    "tensor_table",
    "write_release_projector",
]
