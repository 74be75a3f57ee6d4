"""A sha256 manifest in `sha256sum` format ("HEX  NAME"), so `sha256sum -c SHA256SUMS` checks it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from exaone_gguf.errors import InputError

MANIFEST_NAME = "SHA256SUMS"


def sha256_file(path: Path, block: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(out_dir: Path, files: list[Path], known: dict[Path, str] | None = None, name: str = MANIFEST_NAME) -> Path:
    """Write the manifest of `files` (all inside `out_dir`) there, sorted by name; `known` gives digests
    computed while the files were written, the others are read and hashed now."""
    known = known or {}
    lines = [f"{known.get(p) or sha256_file(p)}  {p.relative_to(out_dir).as_posix()}" for p in sorted(files, key=lambda p: p.name)]
    path = out_dir / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def verify_manifest(path: Path) -> list[str]:
    """Names whose hash differs from the manifest (or that are missing); [] when all match."""
    bad = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise InputError(f"{path}: line {i} is not 'SHA256  NAME'; regenerate the manifest.")
        f = path.parent / name
        if not f.is_file() or sha256_file(f) != digest:
            bad.append(name)
    return bad
