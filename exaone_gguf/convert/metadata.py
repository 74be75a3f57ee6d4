"""`general.*` keys: name, basename, size label, file type, licence and base model from the model card."""

from __future__ import annotations

import math
import re

from gguf import GGML_QUANT_VERSION, GGUFValueType, Keys
from gguf.utility import size_label

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.gguf_io.writer import GGUFPlan


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


def _str_list(v: object) -> list[str]:
    """A front-matter value that may be one string or a list of them -> the non-empty strings."""
    items = [v] if isinstance(v, str) else v if isinstance(v, list) else []
    return [str(x) for x in items if isinstance(x, (str, int, float)) and not isinstance(x, bool) and str(x)]


def add_general(plan: GGUFPlan, ckpt: Checkpoint, file_type: int, n_params: int) -> None:
    G = Keys.General
    model_id = ckpt.model_id
    name, org, basename, size, finetune = split_model_id(model_id)
    plan.add_string(G.TYPE, "model")
    plan.add_string(G.NAME, name)
    if basename:
        plan.add_string(G.BASENAME, basename)
    if finetune:
        plan.add_string(G.FINETUNE, finetune)
    if org:
        plan.add_string(G.ORGANIZATION, org)
    plan.add_string(G.SIZE_LABEL, size or size_label(n_params, 0, 0, 0))
    card = ckpt.card
    for key, gkey in (("license", G.LICENSE), ("license_name", G.LICENSE_NAME), ("license_link", G.LICENSE_LINK)):
        if isinstance(card.get(key), str) and card[key]:
            plan.add_string(gkey, card[key])
    bases = _str_list(card.get("base_model"))
    if bases:
        plan.add_u32(G.BASE_MODEL_COUNT, len(bases))
        for i, b in enumerate(bases):
            plan.add_string(G.BASE_MODEL_NAME.format(id=i), b.split("/")[-1])
            if "/" in b:
                plan.add_string(G.BASE_MODEL_ORGANIZATION.format(id=i), b.split("/")[0])
                plan.add_string(G.BASE_MODEL_REPO_URL.format(id=i), f"https://huggingface.co/{b}")
    for key, gkey in (("tags", G.TAGS), ("language", G.LANGUAGES)):
        v = _str_list(card.get(key))
        if v:
            plan.add_array(gkey, GGUFValueType.STRING, v)
    plan.add_u32(G.QUANTIZATION_VERSION, GGML_QUANT_VERSION)
    plan.add_u32(G.FILE_TYPE, file_type)
