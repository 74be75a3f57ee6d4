"""`general.*` keys: name, basename, size label, file type, licence and base model from the model card."""

from __future__ import annotations

import math
import re

from gguf import GGML_QUANT_VERSION, GGUFValueType
from gguf.utility import size_label

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.convert.writer import GGUFPlan


def parameter_count(ckpt: Checkpoint, hf_names: list[str]) -> int:
    return sum(math.prod(ckpt.tensors[n].shape) for n in hf_names)


def split_model_id(model_id: str) -> tuple[str, str | None, str | None, str | None, str | None]:
    """'LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct' -> (name, organization, basename, size, finetune) pieces."""
    org, _, name = model_id.rpartition("/")
    parts = name.split("-")
    for i, part in enumerate(parts):
        if re.fullmatch(r"\d+(\.\d+)?[BMK]", part, re.I):
            return name, org or None, "-".join(parts[:i]) or None, part.upper(), "-".join(parts[i + 1 :]) or None
    return name, org or None, name, None, None


def add_general(plan: GGUFPlan, ckpt: Checkpoint, file_type: int, n_params: int) -> None:
    model_id = ckpt.model_id
    name, org, basename, size, finetune = split_model_id(model_id)
    plan.add_string("general.type", "model")
    plan.add_string("general.name", name)
    if basename:
        plan.add_string("general.basename", basename)
    if finetune:
        plan.add_string("general.finetune", finetune)
    if org:
        plan.add_string("general.organization", org)
    plan.add_string("general.size_label", size or size_label(n_params, 0, 0, 0))
    card = ckpt.card
    lic = card.get("license")
    if isinstance(lic, str) and lic:
        plan.add_string("general.license", lic)
    for key in ("license_name", "license_link"):
        if isinstance(card.get(key), str) and card[key]:
            plan.add_string(f"general.{key.replace('_', '.')}", card[key])
    bases = card.get("base_model")
    bases = [bases] if isinstance(bases, str) and bases else bases if isinstance(bases, list) else []
    if bases:
        plan.add_u32("general.base_model.count", len(bases))
        for i, b in enumerate(bases):
            plan.add_string(f"general.base_model.{i}.name", b.split("/")[-1])
            if "/" in b:
                plan.add_string(f"general.base_model.{i}.organization", b.split("/")[0])
                plan.add_string(f"general.base_model.{i}.repo_url", f"https://huggingface.co/{b}")
    for key, gkey in (("tags", "general.tags"), ("language", "general.languages")):
        v = card.get(key)
        v = [v] if isinstance(v, str) and v else v
        if isinstance(v, list) and v:
            plan.add_array(gkey, GGUFValueType.STRING, [str(x) for x in v])
    plan.add_u32("general.quantization_version", GGML_QUANT_VERSION)
    plan.add_u32("general.file_type", file_type)
