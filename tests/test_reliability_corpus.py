"""Issue 5, part 1: every broken or hostile input of tests/broken_inputs.py, through the real CLI.

Each case runs `python -m exaone_gguf ...` in a subprocess under a 2 GB address-space limit (a huge
allocation driven by a hostile size fails with MemoryError, which fails the test) and must give: exit
code 2, one `error:` sentence matching the case's pattern, no traceback, nothing new or changed in the
output folder (no .gguf, no .partial), the source byte-identical, and nothing executed (no PWNED file).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
from collections import Counter
from pathlib import Path

import helpers
import pytest
from broken_inputs import CASES, Env, make_base, tree_digest

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 2 << 30  # RLIMIT_AS, bytes


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(args: list[str], cwd: Path, preexec=_limit_memory, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return helpers.run_cli(*args, cwd=cwd, env=env, preexec_fn=preexec, timeout=timeout)


@pytest.fixture(scope="session")
def reliability_bases(tmp_path_factory):
    """The valid tiny checkpoint and GGUF every case starts from; checked unchanged at the end (cases
    hard-link the large files, so a write through a link would show here)."""
    root = tmp_path_factory.mktemp("reliability-base")
    ckpt, gguf = make_base(root)
    before = tree_digest(ckpt), tree_digest(gguf)
    yield ckpt, gguf
    assert (tree_digest(ckpt), tree_digest(gguf)) == before, "a case changed the shared base through a hard link"


def test_corpus_covers_every_area() -> None:
    areas = Counter(c.area for c in CASES)
    assert len(CASES) >= 40, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES)
    for area in ("safetensors", "index", "config", "tokenizer", "weights", "template", "gguf", "output"):
        assert areas[area] >= 3, (area, areas)


def test_base_converts_cleanly(reliability_bases, tmp_path: Path) -> None:
    """The corpus means something only if its unbroken starting point passes under the same limit."""
    ckpt, gguf = reliability_bases
    r = run_cli(["convert", str(ckpt), "-o", str(tmp_path / "ok.gguf")], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli(["inspect", str(gguf)], tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.area}-{c.name}")
def test_broken_input(case, reliability_bases, tmp_path: Path) -> None:
    ckpt, gguf = reliability_bases
    out = tmp_path / "out"
    out.mkdir()
    env = Env(tmp_path, ckpt, gguf, out)
    args, source = case.build(env)
    source_before, out_before = tree_digest(source), tree_digest(out)

    r = run_cli(args, cwd=tmp_path)

    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "error:" in r.stderr, r.stderr
    assert re.search(case.expect, r.stderr, re.IGNORECASE | re.DOTALL), (
        f"message does not match {case.expect!r}:\n{r.stderr}"
    )
    assert tree_digest(out) == out_before, "the output folder changed"
    assert tree_digest(source) == source_before, "the source changed"
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".partial") or p.name == "PWNED"]
    assert not leftovers, leftovers
