"""Item 5 of issue 11: outside the family registry (exaone_gguf/families/), no code names a family.

The rule, checked on the syntax tree of every module of exaone_gguf/ outside exaone_gguf/families/: no string
literal other than a docstring equals a registered name (family, make-tiny recipe, chat format, chat
family, a family's own GGUF architecture, a pre-tokenizer name) or contains a registered Hugging Face
architecture name. Comments and docstrings may name families. The few literals that coincide with a
family name but mean something else are listed in ALLOWED with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

from exaone_gguf import families as F

PACKAGE = Path(__file__).resolve().parent.parent / "exaone_gguf"

ALLOWED = {
    ("convert/vocab.py", "llama"): "tokenizer.ggml.model's value for SentencePiece vocabularies (ggml's name)",
    ("quantize/mixtures.py", "llama"): "llama.cpp's own architecture rule in llama_tensor_get_type (70B GQA)",
    ("publish/card.py", "exaone"): "a Hub tag every release card carries",
    ("vision/tensors.py", "exaone4_5"): "llama.cpp's clip.projector_type value (clip.cpp PROJECTOR_TYPE_EXAONE4_5)",
    # issue 21: the model's source forward reads a checkpoint by its own Hugging Face architecture, tensor names and
    # config keys, sharing nothing with the registry, so that a wrong family table cannot hide from it
    **{
        ("model/source.py", arch): "the independent source forward dispatches on config.architectures"
        for arch in (
            "LlamaForCausalLM",
            "ExaoneForCausalLM",
            "Exaone4ForCausalLM",
            "Exaone4_5_ForConditionalGeneration",
            "ExaoneMoEForCausalLM",
            "ExaoneMoeForCausalLM",
        )
    },
}


def registered_names() -> tuple[set[str], set[str]]:
    fams = F.families().values()
    names = set(F.families()) | set(F.tiny_recipes()) | set(F.chat_formats())
    names |= (
        {f.chat.name for f in fams if f.chat} | {f.arch for f in fams} | {p for f in fams for p in f.pre_tokenizers}
    )
    return names, set(F.supported_architectures())


def family_literals(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every non-docstring string literal that names a registered family."""
    names, archs = registered_names()
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and (node.value in names or any(a in node.value for a in archs))
    ]


def test_no_family_names_outside_the_registry():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("families/"):
            continue
        found += [
            f"{rel}:{line}: {lit!r}"
            for line, lit in family_literals(path.read_text(encoding="utf-8"))
            if (rel, lit) not in ALLOWED
        ]
    assert found == []


def test_the_rule_sees_family_comparisons_and_not_docs():
    src = '''
"""EXAONE 4 (Exaone4ForCausalLM) is named here, in a docstring."""
# and exaone4 in a comment
def f(spec):
    """exaone4 again"""
    if spec.family == "exaone4":
        return SUPPORTED["Exaone4ForCausalLM"]
    return f"tiny-{spec.family}" in ("exaone-deep",)
'''
    assert [line for line, _ in family_literals(src)] == [6, 7, 8]


def test_every_allowed_literal_is_still_there():
    """An allowance whose literal is gone is stale and must go too."""
    for rel, lit in ALLOWED:
        assert lit in [v for _, v in family_literals((PACKAGE / rel).read_text(encoding="utf-8"))], rel
