"""The Hugging Face side: a checkpoint directory as a spec, lazy tensors, tokenizer and model-card facts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Mapping

import yaml

from exaone_gguf.checkpoint.hub import repo_id_of_snapshot
from exaone_gguf.checkpoint.quantization import quantization_of
from exaone_gguf.checkpoint.safetensors import SafetensorsFile, TensorHandle
from exaone_gguf.checkpoint.spec import ConfigReading, ModelSpec, PreTokenizers, load_spec
from exaone_gguf.checkpoint.tokenizer import TokenizerData, load_tokenizer
from exaone_gguf.errors import InputError

__all__ = ["Checkpoint", "ModelSpec", "TensorHandle", "TokenizerData", "load_checkpoint", "load_tensors"]


@dataclass
class Checkpoint:
    path: Path
    spec: ModelSpec
    tensors: dict[str, TensorHandle]
    pre_tokenizers: PreTokenizers | None = None  # the family's byte-level BPE pre-tokenizer names

    @cached_property
    def tokenizer(self) -> TokenizerData:
        return load_tokenizer(self.path, self.pre_tokenizers)

    @cached_property
    def model_id(self) -> str:
        """The model's name: its Hub id when loaded from the Hugging Face cache (`models--ORG--NAME/snapshots/REV`),
        else config.json's `_name_or_path`, else the directory's name."""
        return repo_id_of_snapshot(self.path.resolve()) or str(
            self.spec.config.get("_name_or_path") or self.path.resolve().name
        )

    @cached_property
    def card(self) -> dict[str, object]:
        """Facts from README.md front matter (license, base_model, language, tags), when present."""
        return read_front_matter(self.path / "README.md")

    def tensor(self, name: str) -> TensorHandle:
        try:
            return self.tensors[name]
        except KeyError:
            raise InputError(
                f"{self.path}: tensor '{name}' is missing from the checkpoint; it is incomplete."
            ) from None


def _index_files(directory: Path) -> dict[str, Path]:
    """tensor name -> shard file, from model.safetensors.index.json."""
    index_path = directory / "model.safetensors.index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{index_path}: not a valid safetensors index (needs a 'weight_map' object).") from None
    out = {}
    for name, fname in weight_map.items():
        shard = (directory / fname).resolve()
        if shard.parent != directory.resolve():
            raise InputError(f"{index_path}: shard '{fname}' is outside the checkpoint directory.")
        out[name] = shard
    return out


def load_tensors(directory: Path) -> dict[str, TensorHandle]:
    """Every tensor of the checkpoint directory as a lazy handle (sharded through model.safetensors.index.json)."""
    tensors: dict[str, TensorHandle] = {}
    if (directory / "model.safetensors.index.json").exists():
        wanted = _index_files(directory)
        files = {p: SafetensorsFile(p) for p in sorted(set(wanted.values()))}
        for name, shard in wanted.items():
            if name not in files[shard].tensors:
                raise InputError(f"{shard}: tensor '{name}' is listed in the index but missing from this shard.")
        for shard, f in files.items():
            for name, handle in f.tensors.items():
                if name in tensors:
                    raise InputError(f"{shard}: tensor '{name}' also appears in {tensors[name].file.path}.")
                tensors[name] = handle
    else:
        shards = sorted(directory.glob("*.safetensors"))
        if not shards:
            found = sorted(p.name for p in directory.glob("*.bin")) or ["no weight files"]
            raise InputError(
                f"{directory}: no .safetensors weights found ({', '.join(found[:3])}); "
                "save the model with safetensors first."
            )
        for shard in shards:
            for name, handle in SafetensorsFile(shard).tensors.items():
                if name in tensors:
                    raise InputError(f"{shard}: tensor '{name}' also appears in {tensors[name].file.path}.")
                tensors[name] = handle
    return tensors


def load_checkpoint(directory: Path | str, readings: Mapping[str, ConfigReading]) -> Checkpoint:
    """The checkpoint in `directory`; `readings` maps HF architectures to their config reading (the callers above
    the family registry use exaone_gguf.families.load_checkpoint, which passes the registry's)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory; pass a Hugging Face checkpoint directory.")
    spec = load_spec(directory, readings)
    tensors = load_tensors(directory)
    quant = quantization_of(spec)
    if quant is not None:  # each quantized layer's parts become one lazy dequantizing `.weight`; nothing else changes
        tensors = quant.wrap(tensors, directory / "config.json")
    reading = readings[spec.architecture]  # parse_config refused any other
    if reading.layout is not None:  # e.g. K-EXAONE: experts per expert or fused
        spec = reading.layout(spec, tensors.keys())
    return Checkpoint(directory, spec, tensors, reading.pre_tokenizers)


class _CardLoader(yaml.SafeLoader):
    """yaml's safe loader with YAML 1.2 booleans, as the Hub reads cards: `language: [en, no]` keeps Norwegian
    ("no") a string instead of YAML 1.1's False."""


_CardLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CardLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_front_matter(readme: Path) -> dict[str, object]:
    """The YAML front matter of a model card (README.md) as a dict; {} when there is no card or no front matter.
    Parsed with yaml.safe_load, so flow lists (`language: [en, ko]`), quoting and comments mean what YAML says."""
    try:
        text = readme.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    m = re.match(r"^\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if not m:
        return {}
    try:
        data = yaml.load(m.group(1), Loader=_CardLoader)  # a SafeLoader subclass: plain data only
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 2}" if where is not None else ""  # +2: 0-based, after the opening ---
        raise InputError(
            f"{readme}: the YAML front matter cannot be parsed{at} ({getattr(e, 'problem', None) or e}); "
            "fix it or remove the block between the --- lines."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(
            f"{readme}: the YAML front matter is a {type(data).__name__}, not a mapping of keys; "
            "fix it or remove the block between the --- lines."
        )
    return {str(k): v for k, v in data.items()}
