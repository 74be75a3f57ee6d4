"""The family registry: one module per model family, looked up by the Hugging Face architecture names it claims.

A family module (exaone3.py, exaone4.py, llama.py) alone declares everything family-specific:
- how its config.json is read (`ConfigReading`: key names, defaults, a nested `text_config`),
- its tensor table (`TensorMapping`: one-to-one, copies, stacked experts, slices of fused tensors; prefixes
  as data in `TensorNames`),
- its hyperparameter keys (from `gguf.Keys`) and its GGUF architecture (from `gguf.MODEL_ARCH_NAMES`),
  with alternates (EXAONE 3.x written as `llama`),
- its chat formats (Modelfile TEMPLATE / parameters, card notes, the markers that recognise its templates),
- its vocabulary expectations (tokenizer model, pre-tokenizer names, end-of-turn token),
- its tiny-model recipes (make-tiny) and what make-tiny's tokenizer writers need of it (`TinyTokenizer`),
- a vision tower's tensor table (`vision_tower`, for the projector converter),
- the name of the reference forward that validates it (resolved by exaone_gguf.model).

registry.py lists the families (FAMILIES: one line each) and answers every lookup; no module registers itself
on import. Everything else asks the registry through this package. Layer order: checkpoint -> gguf_io /
quantize -> families -> convert -> validate -> publish -> cli; this package imports only checkpoint (and gguf,
numpy).
"""

from __future__ import annotations

from exaone_gguf.families import base, registry
from exaone_gguf.families.base import *  # noqa: F403
from exaone_gguf.families.registry import *  # noqa: F403

__all__ = [*base.__all__, *registry.__all__]
