"""A sha256 manifest in `sha256sum` format ("HEX  NAME"), so `sha256sum -c SHA256SUMS` checks it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from exaone_gguf.errors import InputError

MANIFEST_NAME = "SHA256SUMS"


def sha256_file(path: Path, block: int = 8 << 20, progress: Callable[[int], None] | None = None) -> str:
    """The file's SHA-256 (hex); `progress(n)` after each block of n bytes read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


def write_manifest(
    out_dir: Path, streamed: dict[Path, str], ggufs: list[Path], others: list[Path], name: str = MANIFEST_NAME
) -> Path:
    """Write the manifest of `ggufs` + `others` (all inside `out_dir`) there, sorted by name.

    Every GGUF must come with the digest its writer took while writing it (`streamed`): it is never read back
    here, so a writer that stops hashing is an error, not a silent second read of gigabytes. Only `others`
    (card, Modelfiles, validation reports: small files written after the GGUFs) are read and hashed now."""
    missing = [p.name for p in ggufs if not streamed.get(p)]
    if missing:
        raise RuntimeError(
            f"{out_dir}: no digest was taken while writing {', '.join(missing)}; the writer must hash every byte "
            "it writes (this is a bug in exaone-gguf, please report it)."
        )
    digests = {p: streamed[p] for p in ggufs} | {p: sha256_file(p) for p in others}
    lines = [f"{digests[p]}  {p.relative_to(out_dir).as_posix()}" for p in sorted(digests, key=lambda p: p.name)]
    path = out_dir / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_manifest(path: Path) -> dict[str, str]:
    """{name: hex digest} of a manifest, in its order; names are relative paths inside its folder."""
    digests = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or name.startswith("/") or ".." in Path(name).parts:
            raise InputError(
                f"{path}: line {i} is not 'SHA256  NAME' with NAME inside its folder; regenerate the manifest."
            )
        digests[name] = digest
    return digests
