"""The README's first command: `exaone-gguf demo` runs end to end and ends with its table."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import run_cli

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models


def test_demo_runs_and_prints_the_table(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "exaone_gguf",
            "demo",
            str(tmp_path / "work"),
            "--families",
            "exaone4",
            "--types",
            "q8_0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "exaone-gguf demo" in res.stderr and "PASS" in res.stderr and "Q8_0" in res.stderr
    assert (tmp_path / "work" / "tiny-exaone4-Q8_0.gguf").exists()  # WORKDIR keeps the files


def test_demo_rejects_an_unknown_family(tmp_path):
    res = run_cli("demo", "--families", "exaone9")
    assert res.returncode == 2 and "exaone9" in res.stderr and "Traceback" not in res.stderr
