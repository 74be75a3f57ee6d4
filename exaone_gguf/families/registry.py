"""The family registry: the one list of families, and every lookup over it (by HF architecture, GGUF
architecture, chat template, make-tiny recipe). Adding a family = its module (or package) and one line in
FAMILIES; nothing registers itself on import. The layers above ask this module, through exaone_gguf.families."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from exaone_gguf import checkpoint
from exaone_gguf.checkpoint.spec import ConfigReading, ModelSpec, read_config
from exaone_gguf.errors import InputError
from exaone_gguf.families import exaone3, exaone4, exaone4_5, exaone_moe, llama
from exaone_gguf.families.base import COMMON_HARMLESS, COMMON_READS, COMPUTATION_KEYS, ChatFormat, Family, TinyRecipe

__all__ = [
    "ALTERNATES",
    "FAMILIES",
    "alternates",
    "chat_format",
    "chat_format_for",
    "chat_formats",
    "check_config_keys",
    "demo_recipes",
    "families",
    "family_of_architecture",
    "family_for",
    "family_of_gguf_arch",
    "family_of_template",
    "gguf_archs",
    "load_checkpoint",
    "load_spec",
    "parse_config",
    "supported_architectures",
    "tiny_recipe",
    "tiny_recipes",
    "writes_as",
]

# Every family, in the order of every listing (supported architectures, make-tiny, demo, error messages).
FAMILIES: tuple[Family, ...] = (
    exaone3.FAMILY,
    exaone4.FAMILY,
    exaone_moe.FAMILY,
    exaone4_5.FAMILY,
    llama.FAMILY,
)
# A family also written under another GGUF architecture (EXAONE 3.x as `llama`); `alt.name` is the family's.
ALTERNATES: tuple[Family, ...] = (llama.EXAONE_AS_LLAMA,)


def _index(fams: tuple[Family, ...], alts: tuple[Family, ...]):
    """The lookup tables, each name claimed once."""
    by_name: dict[str, Family] = {}
    readings: dict[str, ConfigReading] = {}
    tiny: dict[str, tuple[TinyRecipe, Family]] = {}
    for fam in fams:
        if fam.name in by_name:
            raise ValueError(f"model family {fam.name} registered twice")
        if fam.config is None or fam.config.family != fam.name:
            raise ValueError(f"model family {fam.name}: its ConfigReading must name it")
        for a in fam.architectures:
            if a in readings:
                raise ValueError(f"HF architecture {a} is claimed by two families")
            readings[a] = fam.config
        by_name[fam.name] = fam
        for r in fam.tiny:
            if r.name in tiny:
                raise ValueError(f"make-tiny family {r.name} registered twice")
            tiny[r.name] = (r, fam)
    alternates: dict[str, list[Family]] = {}
    for alt in alts:
        if alt.name not in by_name:
            raise ValueError(f"alternate {alt.arch} for unknown family {alt.name}")
        alternates.setdefault(alt.name, []).append(alt)
    return by_name, readings, tiny, alternates


_FAMILIES, READINGS, _TINY, _ALTERNATES = _index(FAMILIES, ALTERNATES)


# ---------------------------------------------------------------------------------------------------- config


def parse_config(cfg: dict[str, Any], path: Path | str = "config.json") -> ModelSpec:
    """checkpoint.spec.parse_config with the registered families' config readings."""
    return checkpoint.spec.parse_config(cfg, READINGS, path)


def load_spec(checkpoint_dir: Path) -> ModelSpec:
    path = Path(checkpoint_dir) / "config.json"
    return parse_config(read_config(path), path)


def load_checkpoint(directory: Path | str) -> checkpoint.Checkpoint:
    """checkpoint.load_checkpoint with the registered families' config readings."""
    return checkpoint.load_checkpoint(directory, READINGS)


def _off(value: Any) -> bool:
    """A value that turns a feature off: null, false, 0, empty, or a list of such (per-layer limits of 0)."""
    if isinstance(value, (list, tuple)):
        return all(_off(v) for v in value)
    return value is None or value is False or value == 0 or value == {} or value == ""


def _reads(fam: "Family") -> frozenset[str]:
    r = fam.config
    return fam.reads | COMMON_READS | {*r.layer_keys, r.act_key, r.eps_key} if r else fam.reads | COMMON_READS


def check_config_keys(cfg: Mapping[str, Any], path: Any) -> list[str]:
    """Refuse (InputError) the config keys that change what the network computes and that the family of the
    config's architecture does not model, set to anything but "off"; return the keys no family knows (new ones:
    the caller warns). The keys are config.json's `cfg` and those of its `text_config` (a multimodal model's
    language model); `path` names the file in messages."""
    archs = cfg.get("architectures") or [None]
    fam = family_of_architecture(archs[0])  # parse_config refused any other
    keys, where = dict(cfg), {}
    nested = cfg.get(fam.config.text_config_key or "")
    if isinstance(nested, dict):
        keys.update(nested)
        where = {k: f" in {fam.config.text_config_key}" for k in nested}
    own = _reads(fam)
    others: dict[str, str] = {}
    for f in _FAMILIES.values():  # the first family that reads a key names it
        others.update({k: f"read by the {f.name} family" for k in _reads(f) - own - others.keys()})
    computation = {**others, **COMPUTATION_KEYS}
    refused = [
        k
        for k, v in keys.items()
        if k in computation and not _off(v) and k not in own and k not in fam.harmless and k not in COMMON_HARMLESS
    ]
    if refused:
        said = " and ".join(f"'{k}'{where.get(k, '')} = {_short(keys[k])} ({computation[k]})" for k in refused)
        raise InputError(
            f"{path}: {said} change{'s' if len(refused) == 1 else ''} what the network computes and llama.cpp's "
            f"`{fam.arch}` graph does not model {'it' if len(refused) == 1 else 'them'}, so {archs[0]} with "
            f"{'this key' if len(refused) == 1 else 'these keys'} cannot be converted."
        )
    known = own | fam.harmless | COMMON_HARMLESS | computation.keys()
    return sorted(k for k in keys if k not in known)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:36] + " ..."


# ---------------------------------------------------------------------------------------------------- lookups


def alternates(family: str) -> tuple[Family, ...]:
    return tuple(_ALTERNATES.get(family, ()))


def families() -> dict[str, Family]:
    """family name -> Family, in registration order."""
    return dict(_FAMILIES)


def family_of_architecture(architecture: str | None) -> Family | None:
    """The family that claims the HF architecture name (config.json's `architectures[0]`)."""
    return next((f for f in FAMILIES if architecture in f.architectures), None)


def supported_architectures() -> tuple[str, ...]:
    return tuple(a for f in _FAMILIES.values() for a in f.architectures)


def gguf_archs() -> tuple[str, ...]:
    """Every GGUF architecture this tool writes (and validates), the families' own first."""
    own = [f.arch for f in _FAMILIES.values()]
    return tuple(dict.fromkeys(own + [a.arch for alts in _ALTERNATES.values() for a in alts]))


def family_of_gguf_arch(arch: str | None, pre: str | None = None) -> Family | None:
    """The family whose own GGUF architecture is `arch` (not an alternate). Two families write `exaone4`
    (EXAONE 4.0 and 4.5); as in llama.cpp only the pre-tokenizer (`tokenizer.ggml.pre`) tells them apart, so
    `pre` picks the family that declares it, else the first registered."""
    own = [f for f in _FAMILIES.values() if f.arch == arch]
    return next((f for f in own if pre is not None and pre in f.pre_tokenizers), own[0] if own else None)


def family_for(spec: ModelSpec, arch: str | None = None) -> Family:
    """The family module for `spec`; `arch` asks for another GGUF architecture (EXAONE 3.x as `llama`)."""
    fam = _FAMILIES.get(spec.family)
    if fam is None:
        raise InputError(
            f"{spec.config_path}: {spec.architecture} is recognised but cannot be converted yet; "
            f"supported: {', '.join(sorted(_FAMILIES))}."
        )
    if arch is not None and arch != fam.arch:
        alt = next((a for a in alternates(fam.name) if a.arch == arch), None)
        if alt is None:
            raise InputError(
                f"{spec.config_path}: {spec.architecture} cannot be written as architecture {arch!r}; "
                f"leave --arch out (gives {fam.arch!r})."
            )
        return alt
    return fam


def writes_as(spec: ModelSpec, arch: str | None) -> bool:
    """True when the converter can write `spec`'s family as the GGUF architecture `arch` (own or alternate)."""
    fam = _FAMILIES.get(spec.family)
    return (
        fam is not None and arch is not None and (arch == fam.arch or any(a.arch == arch for a in alternates(fam.name)))
    )


def family_of_template(template: str) -> Family | None:
    """The family whose chat templates look like `template` (llama.cpp's marker detection)."""
    return next((f for f in _FAMILIES.values() if f.chat is not None and f.chat.recognises(template)), None)


def chat_format_for(arch: str | None, template: str | None) -> ChatFormat | None:
    """The chat format of a GGUF: by its architecture's family, else by a family's marker in the template
    (EXAONE 3.x written as `llama`); None when no family's chat format applies."""
    own = [f for f in _FAMILIES.values() if f.arch == arch and f.chat is not None]
    fam = next((f for f in own if template and f.chat.recognises(template)), own[0] if own else None)
    if fam is None or fam.chat is None:
        fam = next(
            (
                f
                for f in _FAMILIES.values()
                if f.chat and f.chat.claims_marker and template and f.chat.claims_marker in template
            ),
            None,
        )
    return fam.chat.pick(template) if fam is not None and fam.chat is not None else None


def chat_format(name: str | None) -> ChatFormat | None:
    """A chat format by name (None for None or an unknown name)."""
    for f in _FAMILIES.values():
        for c in f.chat.formats if f.chat else ():
            if c.name == name:
                return c
    return None


def chat_formats() -> dict[str, ChatFormat]:
    return {c.name: c for f in _FAMILIES.values() if f.chat for c in f.chat.formats}


def tiny_recipes() -> tuple[str, ...]:
    """Every make-tiny family name, in registration order."""
    return tuple(_TINY)


def demo_recipes() -> tuple[str, ...]:
    """The make-tiny families `demo` runs by default."""
    return tuple(n for n, (r, _) in _TINY.items() if r.demo)


def tiny_recipe(name: str) -> tuple[TinyRecipe, Family]:
    try:
        return _TINY[name]
    except KeyError:
        raise InputError(f"make-tiny: unknown family {name!r}; choose one of {', '.join(_TINY)}.") from None
