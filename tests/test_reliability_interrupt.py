"""Issue 5, parts 3 and 4: interrupted and failing writes leave nothing behind; output is deterministic.

A convert of the default tiny EXAONE 4 to Q4_K_M writes for a few seconds; it is stopped with SIGINT or
SIGTERM at several points (during start-up, as the .partial file appears, in the middle of the tensor
data). A process-wide file size limit (RLIMIT_FSIZE) stands in for a full disk. Each time: a non-zero exit
code and neither the .gguf nor the .partial left in the output folder.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from broken_inputs import make_base, tree_digest
from helpers import cli_command

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.fixture(scope="module")
def slow_source(tmp_path_factory) -> Path:
    """The default tiny EXAONE 4 (102400-token vocab, 57 MB BF16): a Q4_K_M convert takes seconds."""
    from exaone_gguf.tiny import make_tiny

    return make_tiny("exaone4", tmp_path_factory.mktemp("slow") / "exaone4")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    return make_base(tmp_path_factory.mktemp("small"))


def _default_sigint() -> None:
    """SIGINT's default disposition in the child, even when these tests run under a launcher that ignores it
    (a shell's background job passes SIG_IGN down): Python then installs its KeyboardInterrupt handler, as it
    does in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll `pred` every millisecond until it holds; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.001)
    raise AssertionError("timed out waiting for the writer")


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return -1


POINTS = ("startup", "partial-appears", "mid-data")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", POINTS)
def test_convert_interrupted(slow_source: Path, tmp_path: Path, sig: signal.Signals, point: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "model.gguf"
    partial = out / "model.gguf.partial"
    before = tree_digest(slow_source)
    proc = subprocess.Popen(
        cli_command("convert", slow_source, "-o", target, "--outtype", "q4_k_m"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        if point == "startup":
            time.sleep(0.15)
            reached = proc.poll() is None
        elif point == "partial-appears":
            reached = _wait_for(partial.exists, proc)
        else:  # past the header and metadata (~1.6 MB), into the tensor data
            reached = _wait_for(lambda: _size(partial) > 6 << 20, proc)
        assert reached, f"the convert finished before the {point} point; the test needs a slower run"
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [], stderr
    assert tree_digest(slow_source) == before
    if point != "startup":  # once the CLI runs, the signal is reported, not dumped as a traceback
        assert "Traceback" not in stderr, stderr[-2000:]
        assert proc.returncode == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM), stderr


def test_quantize_interrupted_mid_data(slow_source: Path, tmp_path: Path) -> None:
    src = tmp_path / "bf16.gguf"
    r = subprocess.run(cli_command("convert", slow_source, "-o", src), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    out.mkdir()
    partial = out / "q.gguf.partial"
    proc = subprocess.Popen(
        cli_command("quantize", src, out / "q.gguf", "q4_k_m"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        assert _wait_for(lambda: _size(partial) > 6 << 20, proc), "quantize finished before mid-data"
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("outtype", ["bf16", "q8_0"], ids=["kernel-copy", "buffered-write"])
def test_full_disk(slow_source: Path, tmp_path: Path, outtype: str) -> None:
    """RLIMIT_FSIZE makes writes past 8 MB fail with EFBIG, as a full disk fails with ENOSPC: one clear
    sentence, exit 2, nothing left. bf16 copies tensor bytes in the kernel (copy_file_range); q8_0 writes
    computed bytes through Python's buffered file."""
    limit = 8 << 20

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(
        cli_command("convert", slow_source, "-o", out / "model.gguf", "--outtype", outtype),
        env=_env(),
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "model.gguf" in r.stderr and "while writing" in r.stderr, r.stderr
    assert list(out.iterdir()) == []


# The same guarantees for the other two kinds of convert run, which share the single file's write path:
# shards of one type (the first shard alone is past 8 MB) and a release of two types into a folder.
RUNS = {
    "split": lambda out: ["-o", out / "model.gguf", "--outtype", "q8_0", "--split-max-size", "20M"],
    "release": lambda out: ["-o", f"{out / 'rel'}/", "--outtype", "q8_0,q4_k_m"],
}


def _files(out: Path) -> list[str]:
    """Everything under `out`, folders too (a release's folder is made by the run and must go with it)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def _partial_bytes(out: Path) -> int:
    return sum(_size(p) for p in out.rglob("*.partial"))


@pytest.mark.parametrize("run", list(RUNS))
def test_split_and_release_interrupted_mid_data(slow_source: Path, tmp_path: Path, run: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        cli_command("convert", slow_source, *RUNS[run](out)),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        assert _wait_for(lambda: _partial_bytes(out) > 6 << 20, proc), f"the {run} run finished before mid-data"
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr, stderr[-2000:]
    assert _files(out) == [], stderr


@pytest.mark.parametrize("run", list(RUNS))
def test_split_and_release_full_disk(slow_source: Path, tmp_path: Path, run: str) -> None:
    limit = 8 << 20

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(
        cli_command("convert", slow_source, *RUNS[run](out)),
        env=_env(),
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "while writing" in r.stderr, r.stderr
    assert _files(out) == [], r.stderr


def _run_ok(*args: str) -> None:
    r = subprocess.run(cli_command(*args), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("outtype", ["bf16", "q8_0", "q4_k_m"])
def test_convert_is_deterministic(small: tuple[Path, Path], tmp_path: Path, outtype: str) -> None:
    ckpt, _ = small
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    _run_ok("convert", ckpt, "-o", a, "--outtype", outtype, "--threads", "1")
    _run_ok("convert", ckpt, "-o", b, "--outtype", outtype, "--threads", "2")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("qtype", ["q8_0", "q4_k_m", "q6_k"])
def test_quantize_is_deterministic(small: tuple[Path, Path], tmp_path: Path, qtype: str) -> None:
    _, gguf = small
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    _run_ok("quantize", gguf, a, qtype, "--threads", "1")
    _run_ok("quantize", gguf, b, qtype, "--threads", "2")
    assert a.read_bytes() == b.read_bytes()
