"""--threads: by default every core this process may use (its CPU affinity, not the machine's count), for
convert, quantize and validate; and the bytes written do not depend on the thread count."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import run_cli

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models

CPUS = sorted(os.sched_getaffinity(0))


def run_pinned(args: list[str], cpus: set[int]) -> subprocess.CompletedProcess:
    """The CLI in a child process whose CPU affinity is `cpus` (as taskset would set it)."""
    res = run_cli(*args, preexec_fn=lambda: os.sched_setaffinity(0, cpus), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def last_json(res: subprocess.CompletedProcess) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])


# one pinned CPU (distinct from os.cpu_count() on any multi-core machine) and every CPU this test may use
AFFINITIES = [pytest.param({CPUS[-1]}, id="one-cpu"), pytest.param(set(CPUS), id="all-cpus")]


@pytest.mark.parametrize("cpus", AFFINITIES)
def test_default_threads_follow_the_affinity(tiny_dir, tmp_path, cpus):
    src = tiny_dir("exaone4")
    conv = last_json(
        run_pinned(["convert", str(src), "-o", str(tmp_path / "a.gguf"), "--outtype", "q4_k_m", "--json"], cpus)
    )
    assert conv["threads"] == len(cpus)
    quant = last_json(
        run_pinned(
            ["quantize", str(tmp_path / "a.gguf"), str(tmp_path / "b.gguf"), "q8_0", "--allow-requantize", "--json"],
            cpus,
        )
    )
    assert quant["threads"] == len(cpus)
    run_pinned(["validate", str(tmp_path / "a.gguf"), "--json", str(tmp_path / "r.json")], cpus)
    assert json.loads((tmp_path / "r.json").read_text())["threads"] == len(cpus)


def test_explicit_threads_win_over_the_affinity(tiny_dir, tmp_path):
    src = tiny_dir("exaone4")
    conv = last_json(
        run_pinned(
            ["convert", str(src), "-o", str(tmp_path / "a.gguf"), "--outtype", "q8_0", "--threads", "1", "--json"],
            set(CPUS),
        )
    )
    assert conv["threads"] == 1
    # single-file convert --validate hands --threads on to the validator (it used to drop it)
    run_pinned(
        ["convert", str(src), "-o", str(tmp_path / "v.gguf"), "--outtype", "q8_0", "--threads", "1", "--validate"],
        set(CPUS),
    )
    assert json.loads((tmp_path / "v.validation.json").read_text())["threads"] == 1
    pub = last_json(
        run_pinned(
            ["convert", str(src), "-o", f"{tmp_path}/pub/", "--outtype", "q8_0,q4_k_m", "--threads", "3", "--json"],
            set(CPUS),
        )
    )
    assert pub["threads"] == 3


@pytest.mark.parametrize("qtype", ["q4_k_m", "q6_k"])
def test_bytes_do_not_depend_on_threads(tiny_dir, tmp_path, qtype):
    from typer.testing import CliRunner

    from exaone_gguf.cli import app

    src = tiny_dir("exaone4")
    bf16 = tmp_path / "bf16.gguf"
    assert CliRunner().invoke(app, ["convert", str(src), "-o", str(bf16), "--outtype", "bf16"]).exit_code == 0
    outs = {}
    for label, extra in (("one", ["--threads", "1"]), ("default", []), ("five", ["--threads", "5"])):
        out = tmp_path / f"{label}.gguf"
        res = CliRunner().invoke(app, ["convert", str(src), "-o", str(out), "--outtype", qtype, *extra])
        assert res.exit_code == 0, res.output
        outs[label] = out.read_bytes()
        q = tmp_path / f"{label}-quantize.gguf"
        res = CliRunner().invoke(app, ["quantize", str(bf16), str(q), qtype, *extra])
        assert res.exit_code == 0, res.output
        outs[f"{label}-quantize"] = q.read_bytes()
    assert outs["default"] == outs["one"] and outs["five"] == outs["one"]
    assert outs["default-quantize"] == outs["one-quantize"] and outs["five-quantize"] == outs["one-quantize"]
