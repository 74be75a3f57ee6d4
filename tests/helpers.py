"""Helpers the tests share that the product does not need: inverses and readers of what exaone-gguf writes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from exaone_gguf.checkpoint.awq_q4_1 import BLOCK_BYTES, QK4_1
from exaone_gguf.elements import f16_bits_to_f32
from exaone_gguf.families import tiny_recipe
from exaone_gguf.publish.manifest import read_manifest, sha256_file


def template_for(recipe: str) -> str:
    """The chat template a tiny model of make-tiny family `recipe` ships with."""
    template = tiny_recipe(recipe)[0].chat_template
    assert template is not None, f"make-tiny family {recipe} ships its tokenizer writer's own template"
    return template


def unpermute_rows(head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """The inverse of families.llama.permute_rows (GGUF `llama` q/k rows back to HF order)."""

    def unpermute(x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, head_dim // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    return unpermute


def decode_q4_1(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_1 rows -> (codes uint8 [r, K], dequantized float32 [r, K]) as ggml's dequantize_row_q4_1 computes them."""
    r = rows.shape[0]
    b = rows.reshape(r, k // QK4_1, BLOCK_BYTES)
    d = f16_bits_to_f32(b[..., 0:2].copy().view("<u2"))
    m = f16_bits_to_f32(b[..., 2:4].copy().view("<u2"))
    qs = b[..., 4:]
    q = np.concatenate([qs & 0xF, qs >> 4], axis=-1)
    return q.reshape(r, k), (q.astype(np.float32) * d + m).reshape(r, k)


def parse_modelfile(text: str) -> dict[str, object]:
    """FROM, TEMPLATE, SYSTEM, LICENSE and PARAMETER values of a Modelfile (as Ollama reads them); FROM is the
    first FROM line (the model), FROMS every one (a vision model's projector follows)."""
    out: dict[str, object] = {"PARAMETER": [], "FROMS": []}
    body = re.sub(r"(?m)^#.*$", "", text)
    for m in re.finditer(r'(?m)^(FROM|TEMPLATE|SYSTEM|LICENSE|PARAMETER)\s+("""(.*?)"""|([^\n]+))$', body, re.S):
        cmd, value = m.group(1), m.group(3) if m.group(3) is not None else m.group(4).strip()
        if cmd == "PARAMETER":
            k, _, v = value.partition(" ")
            out["PARAMETER"].append((k, v.strip()))  # type: ignore[union-attr]
        elif cmd == "FROM":
            out["FROMS"].append(value)  # type: ignore[union-attr]
            out.setdefault("FROM", value)
        else:
            out[cmd] = value
    return out


def verify_manifest(path: Path) -> list[str]:
    """Names whose hash differs from the SHA256SUMS manifest (or that are missing); [] when all match."""
    path = Path(path)
    return [
        name
        for name, digest in read_manifest(path).items()
        if not (path.parent / name).is_file() or sha256_file(path.parent / name) != digest
    ]


def cli_command(*args: object) -> list[str]:
    """The command line `python -m exaone_gguf ARGS` (for Popen: tests that interrupt a run)."""
    return [sys.executable, "-m", "exaone_gguf", *map(str, args)]


def run_cli(*args: object, **kw) -> subprocess.CompletedProcess:
    """`python -m exaone_gguf ARGS` in a child process, as a user runs it (this checkout's package through
    PYTHONPATH or the editable install): exit code, stdout and stderr as text. `kw` goes to subprocess.run
    (cwd, env, timeout, preexec_fn). Every test that runs the CLI in a child process goes through here."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, **kw)
