"""CI runs from a fresh venv with CI=true, and then a missing ../shared fails the fixture tests instead of
skipping them (a clean clone without ../shared must not pass by doing less)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_TEST = "tests/test_deep.py::test_deep_template_is_lg_llamacpp_one"  # reads ../shared/fixtures/exaone-deep


def _clone_without_shared(tmp_path: Path) -> Path:
    """A copy of the checkout's tests and pytest config whose ../shared does not exist."""
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "tests", clone / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", clone / "pyproject.toml")
    assert not (tmp_path / "shared").exists()
    return clone


def _pytest(clone: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])  # this checkout's package
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", FIXTURE_TEST],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_shared_fails_under_ci(tmp_path):
    clone = _clone_without_shared(tmp_path)
    res = _pytest(clone, "true")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 failed" in res.stdout and "(CI must have ../shared beside the checkout)" in res.stdout, res.stdout
    # Outside CI the same test skips (a developer without ../shared): the difference is CI=true alone.
    res = _pytest(clone, None)
    assert res.returncode == 0 and "1 skipped" in res.stdout, res.stdout + res.stderr


def test_ci_script_uses_a_fresh_venv_and_sets_ci():
    """.ci/run is not run here (it reinstalls everything); its commands are checked in order."""
    lines = [shlex.split(line, comments=True) for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    cmds = [words for words in lines if words]
    venv = next(i for i, w in enumerate(cmds) if w[:3] == ["python3", "-m", "venv"])
    assert "--clear" in cmds[venv] and cmds[venv][-1] == ".venv"
    ci = next(i for i, w in enumerate(cmds) if w == ["export", "CI=true"])
    tests = next(i for i, w in enumerate(cmds) if "pytest" in w)
    assert ci < tests and venv < tests


def test_readme_is_short_and_its_docs_links_resolve():
    """README.md stays a README (the manual is docs/); every docs/*.md link in it, or between the docs pages, exists,
    and every docs page is linked from README."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 8000, len(readme)
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    assert linked == {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}, linked
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"
