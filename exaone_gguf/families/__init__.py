"""The family registry: one module per model family, registered by the Hugging Face architecture names it claims.

A family module (exaone3.py, exaone4.py, llama.py) alone declares everything family-specific:
- how its config.json is read (`ConfigReading`: key names, defaults, a nested `text_config`),
- its tensor table (`TensorMapping`: one-to-one, copies, stacked experts, slices of fused tensors; prefixes
  as data in `TensorNames`),
- its hyperparameter keys (from `gguf.Keys`) and its GGUF architecture (from `gguf.MODEL_ARCH_NAMES`),
  with alternates (EXAONE 3.x written as `llama`),
- its chat formats (Modelfile TEMPLATE / parameters, card notes, the markers that recognise its templates),
- its vocabulary expectations (tokenizer model, pre-tokenizer names, end-of-turn token),
- its tiny-model recipes (make-tiny),
- the name of the reference forward that validates it (resolved by exaone_gguf.validate.reference).

Everything else asks this registry. Layer order: checkpoint -> gguf_io / quantize -> families -> convert ->
validate -> publish -> cli; this package imports only checkpoint (and gguf, numpy).
"""

from __future__ import annotations

# The family modules register themselves on import; the order here is the order of every listing.
from exaone_gguf.families import (  # noqa: E402,F401
    exaone3,
    exaone4,
    exaone_moe,  # noqa: E402,F401 (after llama: listings keep their order)
    llama,
)
from exaone_gguf.families.base import (  # noqa: F401 (the registry's public names)
    BPE_PRE_TOKENIZERS,
    Chat,
    ChatFormat,
    Family,
    HParam,
    Sliced,
    Stacked,
    TensorMapping,
    TensorNames,
    TinyRecipe,
    TinyTokenizer,
    alternates,
    chat_format,
    chat_format_for,
    chat_formats,
    common_hparams,
    demo_recipes,
    families,
    family_for,
    family_of_gguf_arch,
    family_of_template,
    gguf_archs,
    llama_hparams,
    register,
    register_alternate,
    supported_architectures,
    tiny_recipe,
    tiny_recipes,
    writes_as,
)

__all__ = [
    "BPE_PRE_TOKENIZERS",
    "Chat",
    "ChatFormat",
    "Family",
    "HParam",
    "Sliced",
    "Stacked",
    "TensorMapping",
    "TensorNames",
    "TinyRecipe",
    "TinyTokenizer",
    "alternates",
    "chat_format",
    "chat_format_for",
    "chat_formats",
    "common_hparams",
    "demo_recipes",
    "families",
    "family_for",
    "family_of_gguf_arch",
    "family_of_template",
    "gguf_archs",
    "llama_hparams",
    "register",
    "register_alternate",
    "supported_architectures",
    "tiny_recipe",
    "tiny_recipes",
    "writes_as",
]
