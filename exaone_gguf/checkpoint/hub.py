"""A source given as a Hugging Face repo id (`LGAI-EXAONE/EXAONE-4.0-1.2B`): resolved to a snapshot directory
in the user's Hugging Face cache with huggingface_hub, which honours HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE and
the user's token (HF_TOKEN or `hf auth login`). Only the files the converter reads are downloaded. A local
directory that exists always wins over a repo id of the same spelling."""

from __future__ import annotations

import re
from pathlib import Path

from exaone_gguf.errors import InputError

# What load_checkpoint and the card read; nothing else of the repo (other weight formats, ONNX, images...).
HUB_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
]

# Hugging Face's own rule for repo names: letters, digits, '-', '_', '.'; no '--' or '..'; not starting or
# ending with '-' or '.'; at most 96 characters.
_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?!.*(?:--|\.\.))({_NAME})/({_NAME})")
_CACHE_DIR = re.compile(r"models--(.+?)--(.+)")


def is_repo_id(text: str) -> bool:
    return _REPO_ID.fullmatch(text) is not None


def repo_id_of_snapshot(directory: Path) -> str | None:
    """`.../models--ORG--NAME/snapshots/REV` (the Hugging Face cache layout) -> 'ORG/NAME'; else None."""
    parts = Path(directory).absolute().parts
    if len(parts) >= 3 and parts[-2] == "snapshots":
        m = _CACHE_DIR.fullmatch(parts[-3])
        if m:
            return f"{m.group(1)}/{m.group(2)}"
    return None


def resolve_source(src: str | Path) -> Path:
    """The checkpoint directory for `src`: the path itself when it exists or is not a repo id, else the
    repo's snapshot in the Hugging Face cache (downloaded when missing and the network is allowed)."""
    path = Path(src)
    text = path.as_posix() if isinstance(src, Path) else str(src)
    if path.exists() or not is_repo_id(text):
        return path  # load_checkpoint says what is wrong with a path that is not a checkpoint
    return Path(_download(text))


def _download(repo_id: str) -> str:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = constants.HF_HUB_OFFLINE
    try:
        return snapshot_download(repo_id, allow_patterns=HUB_FILES)
    except GatedRepoError:
        raise InputError(
            f"{repo_id}: the Hugging Face repo is gated; accept its conditions on huggingface.co and log in "
            "(`hf auth login` or HF_TOKEN)."
        ) from None
    except RepositoryNotFoundError:
        raise InputError(
            f"{repo_id}: no such local directory, and no such Hugging Face repo (or it is private: log in with "
            "`hf auth login` or HF_TOKEN)."
        ) from None
    except RevisionNotFoundError:
        raise InputError(
            f"{repo_id}: the Hugging Face repo has no 'main' revision; download it by hand and pass the directory."
        ) from None
    except LocalEntryNotFoundError:
        if offline:
            raise InputError(
                f"{repo_id}: not a local directory and not in the Hugging Face cache ({constants.HF_HUB_CACHE}), "
                "and HF_HUB_OFFLINE is set; download it once with the network on, or pass a checkpoint directory."
            ) from None
        raise InputError(
            f"{repo_id}: not a local directory, not in the Hugging Face cache ({constants.HF_HUB_CACHE}), and the "
            "Hub could not be reached; check the network, or pass a checkpoint directory."
        ) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        raise InputError(
            f"{repo_id}: downloading from Hugging Face failed (HTTP {status}); try again later, or pass a checkpoint directory."
        ) from None
