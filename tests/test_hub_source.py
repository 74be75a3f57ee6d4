"""A source given as a Hugging Face repo id, resolved from a Hugging Face cache built here (the real layout:
models--ORG--NAME/refs/main, blobs/, snapshots/REV/ symlinks), with HF_HUB_OFFLINE=1: nothing touches the
network. A repo that is not cached fails with exit 2 and one sentence; an existing local directory wins."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from fnmatch import fnmatch
from pathlib import Path

import pytest
from helpers import run_cli

from exaone_gguf.checkpoint.hub import HUB_FILES, is_repo_id
from exaone_gguf.families import load_checkpoint

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models

REV = "0123456789abcdef0123456789abcdef01234567"


def build_cache(hub: Path, repo_id: str, src: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Put the checkpoint `src` into `hub` as huggingface_hub lays out a downloaded repo; returns the snapshot."""
    org, name = repo_id.split("/")
    repo = hub / f"models--{org}--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)  # huggingface_hub writes the hash without a newline
    (repo / "blobs").mkdir()
    snap = repo / "snapshots" / REV
    snap.mkdir(parents=True)
    # only what resolve_source would download: proves the list holds every file the converter reads
    files = {p.name: p.read_bytes() for p in src.iterdir() if any(fnmatch(p.name, pat) for pat in HUB_FILES)}
    files |= extra or {}
    for fname, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / fname).symlink_to(os.path.relpath(blob, snap))
    return snap


def hf_env(tmp_path: Path, offline: bool = True, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_DISABLE_TELEMETRY="1", **extra
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env, cwd=cwd, timeout=600)


def one_sentence(stderr: str) -> str:
    text = " ".join(stderr.split())
    assert text.startswith("error: ") and text.endswith("."), text
    body = text.removeprefix("error: ")
    assert ". " not in body.replace("e.g. ", "").rstrip("."), text  # one sentence
    return body


@pytest.mark.parametrize("family", ["exaone4", "llama"])  # byte-level BPE files; SentencePiece tokenizer.model
def test_repo_id_converts_offline_from_the_cache(tiny_dir, tmp_path, family):
    src = tiny_dir(family)
    repo_id = json.loads((src / "config.json").read_text())["_name_or_path"]
    build_cache(tmp_path / "hub", repo_id, src)
    local = tmp_path / "local.gguf"
    assert run(["convert", str(src), "-o", str(local), "--outtype", "q8_0"], hf_env(tmp_path)).returncode == 0
    res = run(
        ["convert", repo_id, "-o", str(tmp_path / "hub.gguf"), "--outtype", "q8_0", "--json"],
        hf_env(tmp_path),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "hub.gguf").read_bytes() == local.read_bytes()  # same checkpoint, same bytes


def test_repo_id_release_names_the_repo(tiny_dir, tmp_path):
    """A cached checkpoint whose config has no _name_or_path: the names come from the repo id, not the hash."""
    src = tiny_dir("exaone4")
    cfg = json.loads((src / "config.json").read_text())
    del cfg["_name_or_path"]
    snap = build_cache(
        tmp_path / "hub",
        "SomeOrg/Tiny-EXAONE-4.0-29M-Instruct",
        src,
        {"config.json": json.dumps(cfg).encode(), "README.md": b"no front matter\n"},
    )
    ckpt = load_checkpoint(snap)
    assert ckpt.model_id == "SomeOrg/Tiny-EXAONE-4.0-29M-Instruct"
    res = run(
        ["convert", "SomeOrg/Tiny-EXAONE-4.0-29M-Instruct", "-o", f"{tmp_path}/pub/", "--outtype", "q8_0", "--json"],
        hf_env(tmp_path),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    [v] = json.loads(res.stdout.strip().splitlines()[-1])["variants"]
    assert Path(v["files"][0]).name == "Tiny-EXAONE-4.0-29M-Instruct-Q8_0.gguf"
    assert 'base_model: "SomeOrg/Tiny-EXAONE-4.0-29M-Instruct"' in (tmp_path / "pub" / "README.md").read_text()


def test_repo_id_not_cached_offline_fails_with_one_sentence(tmp_path):
    (tmp_path / "hub").mkdir()
    res = run(
        ["convert", "LGAI-EXAONE/EXAONE-4.0-1.2B", "-o", str(tmp_path / "x.gguf")], hf_env(tmp_path), cwd=tmp_path
    )
    assert res.returncode == 2
    body = one_sentence(res.stderr)
    assert body.startswith("LGAI-EXAONE/EXAONE-4.0-1.2B: not a local directory and not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE" in body and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]  # nothing written, nothing downloaded


def test_existing_local_directory_wins(tiny_dir, tmp_path):
    """`org/name` that exists as a directory under the working directory is that directory, not a repo."""
    (tmp_path / "hub").mkdir()
    shutil.copytree(tiny_dir("exaone4"), tmp_path / "exaone-gguf" / "tiny-exaone4")
    res = run(
        ["convert", "exaone-gguf/tiny-exaone4", "-o", str(tmp_path / "x.gguf"), "--outtype", "q8_0"],
        hf_env(tmp_path),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert not any((tmp_path / "hub").iterdir())


class _HubDouble(http.server.BaseHTTPRequestHandler):
    """A local stand-in for the Hub's API answering as it does for a missing and for a gated repo."""

    def do_GET(self):
        code, err = (403, "GatedRepo") if "gated" in self.path else (404, "RepoNotFound")
        body = json.dumps({"error": "nope"}).encode()
        self.send_response(code)
        self.send_header("X-Error-Code", err)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_double():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubDouble)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "repo, expect", [("nobody/no-such-model", "no such Hugging Face repo"), ("someone/gated-model", "is gated")]
)
def test_repo_missing_or_gated_fails_with_one_sentence(tmp_path, hub_double, repo, expect):
    (tmp_path / "hub").mkdir()
    res = run(
        ["convert", repo, "-o", str(tmp_path / "x.gguf")],
        hf_env(tmp_path, offline=False, HF_ENDPOINT=hub_double),
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    body = one_sentence(res.stderr)
    assert body.startswith(f"{repo}: ") and expect in body


def test_what_counts_as_a_repo_id():
    assert is_repo_id("LGAI-EXAONE/EXAONE-4.0-1.2B")
    for not_id in ("./a/b", "/abs/path", "a/b/c", "a--b/c", "a/b.", "ckpt"):
        assert not is_repo_id(not_id), not_id
    assert {"config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "README.md"} <= set(
        HUB_FILES
    )
