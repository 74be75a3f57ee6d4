"""Issue 11: layers point down. The import-linter contract in pyproject.toml ([tool.importlinter], contract
`layers`) holds for the package; an upward import, at module level or hidden in a function, breaks it; a new
top-level module must be given a layer; and no import cycle hides behind function-level imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
# the `lint-imports` console script, run by this interpreter wherever the script itself was installed
LINT_IMPORTS = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def _lint(tree: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under `tree`, with the contract of `tree`/pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(tree), "NO_COLOR": "1"}
    return subprocess.run(
        [*LINT_IMPORTS, "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_the_layer_contract():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "layers point down KEPT" in r.stdout


@pytest.fixture
def copy_tree(tmp_path: Path) -> Path:
    """A copy of the package and its pyproject.toml, to break on purpose."""
    shutil.copytree(ROOT / "exaone_gguf", tmp_path / "exaone_gguf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


# The upward imports this issue removed, put back one at a time: each must break the contract.
UPWARD = [
    (
        "checkpoint/awq_q4_1.py",
        "from exaone_gguf.quantize.kernels import quantize\n",
        "exaone_gguf.checkpoint.awq_q4_1 -> exaone_gguf.quantize.kernels",
    ),
    (
        "gguf_io/split.py",
        "def _f():\n    from exaone_gguf.convert import pipeline\n",  # hidden in a function
        "exaone_gguf.gguf_io.split -> exaone_gguf.convert.pipeline",
    ),
    (
        "quantize/imatrix.py",
        "from exaone_gguf.convert.pipeline import convert_rows\n",
        "exaone_gguf.quantize.imatrix -> exaone_gguf.convert.pipeline",
    ),
    ("validate/metrics.py", "from exaone_gguf import publish\n", "exaone_gguf.validate.metrics -> exaone_gguf.publish"),
    # issue 22: the model sits below the converter that uses its RoPE
    (
        "model/rope.py",
        "from exaone_gguf.convert import pipeline\n",
        "exaone_gguf.model.rope -> exaone_gguf.convert.pipeline",
    ),
]


@pytest.mark.parametrize(("module", "line", "chain"), UPWARD, ids=[u[0] for u in UPWARD])
@pytest.mark.slow
def test_an_upward_import_breaks_the_contract(copy_tree: Path, module: str, line: str, chain: str):
    assert _lint(copy_tree).returncode == 0  # the copy keeps it, as the package does
    target = copy_tree / "exaone_gguf" / module
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line, encoding="utf-8")
    r = _lint(copy_tree)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "layers point down BROKEN" in r.stdout
    assert chain in r.stdout, r.stdout


def test_a_module_without_a_layer_breaks_the_contract(copy_tree: Path):
    """The contract is exhaustive: a new top-level module or package must be placed in a layer first."""
    (copy_tree / "exaone_gguf" / "newthing.py").write_text("X = 1\n", encoding="utf-8")
    r = _lint(copy_tree)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "exaone_gguf.newthing" in r.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected module groups larger than one (Tarjan, iterative), function-level imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_import_cycles_hide_behind_function_level_imports():
    cycles = _cycles(grimp.build_graph("exaone_gguf", cache_dir=None))
    assert cycles == []


def test_the_cycle_finder_sees_a_cycle_made_through_a_function(copy_tree: Path, monkeypatch):
    """The broken input of the test above: put back the tokenizer cycle this issue removed, hidden in a
    function, in a copy of the package; the finder must report it (the package itself has no such cycle)."""
    tok = copy_tree / "exaone_gguf" / "checkpoint" / "token_files.py"
    tok.write_text(
        tok.read_text(encoding="utf-8") + "\n\ndef _f():\n    from exaone_gguf.checkpoint import tokenizer\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(copy_tree))
    for name in [m for m in sys.modules if m == "exaone_gguf" or m.startswith("exaone_gguf.")]:
        monkeypatch.delitem(sys.modules, name)
    graph = grimp.build_graph("exaone_gguf", cache_dir=None)
    cycles = [set(c) for c in _cycles(graph)]
    assert {"exaone_gguf.checkpoint.token_files", "exaone_gguf.checkpoint.tokenizer"} <= set().union(*cycles)


# Issue 21: the source's own forward reads the checkpoint by HF names; an import of the converter's tables, direct
# or through the kernels it shares (model/ops.py, once validate/reference/common.py, imported convert.rope and, for
# a type, weights.py), breaks the `source-independent` contract.
INDEPENDENCE = [
    ("model/source.py", "from exaone_gguf.families import base\n"),
    ("model/ops.py", "from exaone_gguf.convert.pipeline import convert_rows\n"),
    ("model/ops.py", "from exaone_gguf.model.weights import Weights as _W\n"),
]


def test_the_package_keeps_the_source_forward_independent():
    r = _lint(ROOT)
    assert "source forward is independent of the converter KEPT" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(("module", "line"), INDEPENDENCE, ids=[f"{m}:{line.split()[1]}" for m, line in INDEPENDENCE])
def test_a_table_import_breaks_the_independence_contract(copy_tree: Path, module: str, line: str):
    target = copy_tree / "exaone_gguf" / module
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line, encoding="utf-8")
    r = _lint(copy_tree)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "source forward is independent of the converter BROKEN" in r.stdout, r.stdout
