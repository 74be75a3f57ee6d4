"""Chat templates for the tiny test models that `make-tiny` writes (declared by the family modules in
exaone_gguf/families/, which hold the template texts).

Written for this project (not copies of LG's files); each renders the same prompt format as the
official template of its family, which tests/test_chat_template.py checks against the real files
on a fixed set of conversations. Every tag uses `-` trimming and all output comes from string
expressions, so the source layout never leaks into the prompt.
"""

from __future__ import annotations

from exaone_gguf.errors import InputError
from exaone_gguf.families import tiny_recipe, tiny_recipes
from exaone_gguf.families.exaone3 import EXAONE3_TEMPLATE, EXAONE_DEEP_TEMPLATE  # noqa: F401 (re-exported)
from exaone_gguf.families.exaone4 import EXAONE4_TEMPLATE  # noqa: F401 (re-exported)


def template_for(family: str) -> str:
    """The chat template a tiny model of `family` (a make-tiny name) ships with."""
    known = [n for n in tiny_recipes() if tiny_recipe(n)[0].chat_template is not None]
    if family not in known:
        raise InputError(f"No chat template for model family {family!r}; known families: {', '.join(known)}.")
    return tiny_recipe(family)[0].chat_template
