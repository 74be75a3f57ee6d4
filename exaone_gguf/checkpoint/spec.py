"""config.json -> ModelSpec: one typed description of the network, whatever the family's key names."""

from __future__ import annotations

import json
from collections import ChainMap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from exaone_gguf.errors import InputError


@dataclass(frozen=True)
class PreTokenizers:
    """llama.cpp's `tokenizer.ggml.pre` names for the two byte-level BPE pre-tokenizers we read."""

    split_digits: str  # digits split one by one (EXAONE 3.x)
    gpt2_regex: str  # the GPT-2 regex (EXAONE 4, slow GPT2Tokenizer files)


@dataclass(frozen=True)
class ConfigReading:
    """How one family's config.json is read: the family-specific key names and defaults. A family module
    (exaone_gguf/families/) declares one; the registry maps the HF architecture names it claims to it and hands
    that table to parse_config: the checkpoint layer itself names no family."""

    family: str  # ModelSpec.family
    layer_keys: tuple[str, ...] = ("num_hidden_layers",)  # the first present wins
    act_key: str = "hidden_act"
    eps_key: str = "rms_norm_eps"
    eps_default: float = 1e-6
    tie_default: bool = False  # the config class's default when the file omits tie_word_embeddings
    sliding_window: bool = False  # reads sliding_window / layer_types / sliding_window_pattern
    text_config_key: str | None = "text_config"  # multimodal configs nest the language model's keys here
    pre_tokenizers: PreTokenizers | None = None
    # Family-specific values (expert counts, MTP layers, ...): given the typed key reader over the (nested)
    # config, returns what lands in ModelSpec.extras.
    extras: Callable[["ConfigKeys"], dict[str, Any]] | None = None
    # The spec adjusted to the checkpoint's tensor names (a layout the config cannot say: fused experts).
    layout: Callable[["ModelSpec", Any], "ModelSpec"] | None = None


@dataclass(frozen=True)
class RopeScaling:
    """llama3-style rope scaling (the only kind EXAONE uses)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelSpec:
    family: str  # the registered family's name (exaone_gguf/families/)
    architecture: str  # HF architectures[0]
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    # Hybrid EXAONE 4: window size, and per layer "sliding_attention" / "full_attention".
    sliding_window: int | None
    layer_types: tuple[str, ...]
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    torch_dtype: str | None
    config: dict[str, Any] = field(repr=False, compare=False)
    config_path: Path | None = field(default=None, compare=False)
    extras: dict[str, Any] = field(default_factory=dict, compare=False)  # ConfigReading.extras' values

    def is_sliding(self, layer: int) -> bool:
        return self.sliding_window is not None and self.layer_types[layer] == "sliding_attention"

    @property
    def is_hybrid(self) -> bool:
        return any(self.is_sliding(i) for i in range(self.num_layers))

    def uses_rope(self, layer: int) -> bool:
        """EXAONE 4 hybrids apply RoPE on sliding layers only; global layers are NoPE."""
        return not self.is_hybrid or self.is_sliding(layer)


class ConfigKeys:
    """Typed look-ups in a config dict with one-sentence errors naming the file and key."""

    def __init__(self, cfg: dict[str, Any], path: str) -> None:
        self.cfg, self.path = cfg, path

    def _check(self, key: str, value: Any, types: tuple[type, ...], what: str) -> Any:
        if isinstance(value, bool) and bool not in types:
            raise InputError(f"{self.path}: key '{key}' must be {what}, got {value!r}; fix the config.")
        if not isinstance(value, types):
            raise InputError(f"{self.path}: key '{key}' must be {what}, got {value!r}; fix the config.")
        return value

    def int(self, *keys: str, default: Any = ..., positive: bool = True) -> Any:
        for key in keys:
            if key in self.cfg and self.cfg[key] is not None:
                v = self._check(key, self.cfg[key], (int,), "an integer")
                if positive and v <= 0:
                    raise InputError(f"{self.path}: key '{key}' must be positive, got {v}; fix the config.")
                return v
        if default is ...:
            raise InputError(f"{self.path}: required key '{keys[0]}' is missing; add it to the config.")
        return default

    def float(self, *keys: str, default: Any = ...) -> Any:
        for key in keys:
            if key in self.cfg and self.cfg[key] is not None:
                v = self._check(key, self.cfg[key], (int, float), "a number")
                if not v > 0:
                    raise InputError(f"{self.path}: key '{key}' must be positive, got {v}; fix the config.")
                return float(v)
        if default is ...:
            raise InputError(f"{self.path}: required key '{keys[0]}' is missing; add it to the config.")
        return default

    def bool(self, key: str, default: bool) -> bool:
        v = self.cfg.get(key)
        return default if v is None else self._check(key, v, (bool,), "true or false")


def read_config(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: config.json not found; point at a Hugging Face checkpoint directory.") from None
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid UTF-8 JSON ({e}); restore the original config.json.") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: top level must be a JSON object; restore the original config.json.")
    return cfg


def _rope_scaling(k: ConfigKeys) -> RopeScaling | None:
    rs = k.cfg.get("rope_scaling") or k.cfg.get("rope_parameters")
    if not rs:
        return None
    if not isinstance(rs, dict):
        raise InputError(f"{k.path}: key 'rope_scaling' must be an object or null, got {rs!r}.")
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return None
    if kind != "llama3":
        raise InputError(f"{k.path}: rope_scaling type {kind!r} is not supported (only llama3); fix the config.")
    sk = ConfigKeys(rs, f"{k.path} (rope_scaling)")
    return RopeScaling(
        factor=sk.float("factor"),
        low_freq_factor=sk.float("low_freq_factor", default=1.0),
        high_freq_factor=sk.float("high_freq_factor", default=4.0),
        original_max_position_embeddings=sk.int("original_max_position_embeddings", default=8192),
    )


def _rope_theta(k: ConfigKeys) -> float:
    """`rope_theta`, or (configs saved by transformers 5) the one inside `rope_parameters`; 10000 when neither."""
    rp = k.cfg.get("rope_parameters")
    if k.cfg.get("rope_theta") is None and isinstance(rp, dict) and rp.get("rope_theta") is not None:
        return ConfigKeys(rp, f"{k.path} (rope_parameters)").float("rope_theta")
    return k.float("rope_theta", default=10000.0)


def _layer_types(k: ConfigKeys, n_layers: int, window: int | None, reads: bool) -> tuple[str, ...]:
    """EXAONE 4: `layer_types` wins; else expand `sliding_window_pattern` ("LLLG" or an int period). `reads`: the
    family reads `layer_types`, whose values are checked even without a window (another kind of layer is refused)."""
    lt = k.cfg.get("layer_types") if reads else None
    if lt is not None:
        ok = {"full_attention", "sliding_attention"}
        other = [t for t in lt if not (isinstance(t, str) and t in ok)] if isinstance(lt, list) else []
        if other:
            raise InputError(
                f"{k.path}: 'layer_types' lists a layer of type {other[0]!r}, which llama.cpp's graph does not have "
                "(only 'full_attention' / 'sliding_attention'), so this model cannot be converted."
            )
        if not isinstance(lt, list) or len(lt) != n_layers:
            raise InputError(
                f"{k.path}: 'layer_types' must list {n_layers} entries of "
                "'full_attention' / 'sliding_attention'; fix the config."
            )
    if window is None:
        return ("full_attention",) * n_layers
    if lt is not None:
        return tuple(lt)
    pat = k.cfg.get("sliding_window_pattern")
    if isinstance(pat, str) and pat and set(pat) <= {"L", "G"}:
        return tuple("sliding_attention" if pat[i % len(pat)] == "L" else "full_attention" for i in range(n_layers))
    if isinstance(pat, int) and not isinstance(pat, bool) and pat > 0:
        return tuple("sliding_attention" if (i + 1) % pat else "full_attention" for i in range(n_layers))
    raise InputError(
        f"{k.path}: 'sliding_window' is set but neither 'layer_types' nor a valid 'sliding_window_pattern' "
        f"(got {pat!r}) says which layers slide; fix the config."
    )


def parse_config(
    cfg: dict[str, Any], readings: Mapping[str, ConfigReading], path: Path | str = "config.json"
) -> ModelSpec:
    """Turn a config dict into a ModelSpec, or raise InputError naming the key that is wrong. `readings`: HF
    `architectures[0]` -> how its config is read (exaone_gguf.families.registry.READINGS)."""
    path = Path(path)
    k = ConfigKeys(cfg, str(path))
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    reading = readings.get(arch) if arch is not None else None
    if reading is None:
        supported = ", ".join(readings)
        raise InputError(f"{path}: architecture {arch!r} is not supported; supported: {supported}.")
    family = reading.family
    if cfg.get("quantization_config") is not None:
        from exaone_gguf.checkpoint.quantization import parse_quantization

        parse_quantization(cfg["quantization_config"], path)  # what the readers handle is read; the rest refused
    top = cfg
    nested = cfg.get(reading.text_config_key) if reading.text_config_key else None
    if nested is not None:  # multimodal: the language model's keys sit in text_config, the rest on top
        if not isinstance(nested, dict):
            raise InputError(f"{path}: key '{reading.text_config_key}' must be an object; fix the config.")
        cfg = ChainMap(nested, top)
        k = ConfigKeys(cfg, f"{path} ({reading.text_config_key})")

    hidden = k.int("hidden_size")
    heads = k.int("num_attention_heads")
    n_layers = k.int(*reading.layer_keys)
    act = cfg.get(reading.act_key, "silu")
    eps = k.float(reading.eps_key, default=reading.eps_default)
    tie_default = reading.tie_default
    if act != "silu":
        raise InputError(f"{path}: activation {act!r} is not supported (only silu); fix the config.")
    if hidden % heads and "head_dim" not in cfg:
        raise InputError(f"{path}: hidden_size {hidden} is not divisible by num_attention_heads {heads}.")
    head_dim = k.int("head_dim", default=hidden // heads)
    kv_heads = k.int("num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise InputError(f"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}.")
    if head_dim % 2:
        raise InputError(f"{path}: head_dim {head_dim} must be even for rotary embeddings.")

    window = k.int("sliding_window", default=None) if reading.sliding_window else None
    layer_types = _layer_types(k, n_layers, window, reading.sliding_window)

    return ModelSpec(
        family=family,
        architecture=arch,
        vocab_size=k.int("vocab_size"),
        hidden_size=hidden,
        intermediate_size=k.int("intermediate_size", default=4 * hidden),
        num_layers=n_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_eps=eps,
        rope_theta=_rope_theta(k),
        rope_scaling=_rope_scaling(k),
        max_position_embeddings=k.int("max_position_embeddings", default=2048),
        tie_word_embeddings=k.bool("tie_word_embeddings", tie_default),
        sliding_window=window,
        layer_types=layer_types,
        bos_token_id=k.int("bos_token_id", default=None, positive=False),
        eos_token_id=_first_id(k, "eos_token_id"),
        pad_token_id=k.int("pad_token_id", default=None, positive=False),
        torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
        config=top,
        config_path=path,
        extras=reading.extras(k) if reading.extras else {},
    )


def _first_id(k: ConfigKeys, key: str) -> int | None:
    v = k.cfg.get(key)
    if isinstance(v, list):  # generation configs may list several EOS ids; the first is the canonical one
        v = v[0] if v else None
    if v is None:
        return None
    return k._check(key, v, (int,), "an integer")


def load_spec(checkpoint_dir: Path, readings: Mapping[str, ConfigReading]) -> ModelSpec:
    path = Path(checkpoint_dir) / "config.json"
    return parse_config(read_config(path), readings, path)
