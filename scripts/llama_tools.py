#!/usr/bin/env python
"""llama.cpp's own tools, built once from the llama.cpp inside the installed llama-cpp-python's sdist.

The same llama.cpp that llama-cpp-python was built from (its sdist vendors it under vendor/llama.cpp), so the
tools, its `convert_hf_to_gguf.py` and its gguf-py match the runtime the validator already uses:

  1. the installed llama-cpp-python's version (importlib.metadata);
  2. `pip download --no-binary :all: --no-deps llama-cpp-python==VERSION` (pip's cache makes a repeat cheap);
  3. vendor/llama.cpp extracted into the cache;
  4. cmake + Ninja (`pip install ninja` when there is none), CPU only, Release, static, only the targets
     llama-quantize, llama-imatrix and llama-perplexity, -j2.

The cache lives outside the repository: $EXAONE_GGUF_TOOLS_CACHE/llama.cpp-VERSION/, by default
~/.cache/exaone-gguf/llama.cpp-VERSION/. A file lock serializes concurrent callers (tests, benchmarks, other
checkouts); a stamp written last marks a finished build, so later calls return at once.

  python scripts/llama_tools.py            # build if needed, print the paths (and the build time)
  python scripts/llama_tools.py --json     # the same as one JSON object

From Python (tests reach it through the `llama_tools` session fixture in tests/conftest.py):

  from scripts.llama_tools import tools, source_dir
  tools()["llama-perplexity"]   # Path of the binary
  source_dir() / "convert_hf_to_gguf.py"
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

TARGETS = ("llama-quantize", "llama-imatrix", "llama-perplexity")
JOBS = 2
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries: nothing to find at run time
    "-DGGML_CUDA=OFF",
    "-DGGML_METAL=OFF",
    "-DGGML_VULKAN=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)
STAMP = "build.json"


class ToolsError(RuntimeError):
    """The tools could not be fetched or built (the message says which step and where its log is)."""


def version() -> str:
    """The installed llama-cpp-python's version (the llama.cpp the tools are built from)."""
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError as e:
        raise ToolsError("llama-cpp-python is not installed in this Python; install it first (pip install .)") from e


def cache_dir(ver: str | None = None) -> Path:
    root = os.environ.get("EXAONE_GGUF_TOOLS_CACHE") or Path.home() / ".cache" / "exaone-gguf"
    return Path(root).expanduser() / f"llama.cpp-{ver or version()}"


@contextmanager
def _locked(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # another process building the same cache: wait for it
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], log: Path, what: str, cwd: Path | None = None) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise ToolsError(f"{what} failed (exit {rc}); log {log}:\n" + "\n".join(tail))


def _extract(cache: Path, ver: str, log: Path) -> Path:
    """Download the sdist and extract its vendor/llama.cpp into cache/llama.cpp (atomically)."""
    src = cache / "llama.cpp"
    if (src / "CMakeLists.txt").is_file() and (src / "convert_hf_to_gguf.py").is_file():
        return src
    with tempfile.TemporaryDirectory(dir=cache, prefix="sdist-") as tmp:
        tmp = Path(tmp)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"llama-cpp-python=={ver}",
                "-d",
                str(tmp),
            ],
            log,
            f"pip download llama-cpp-python=={ver}",
        )
        tarballs = sorted(tmp.glob("llama_cpp_python-*.tar.gz"))
        if not tarballs:
            raise ToolsError(f"pip download llama-cpp-python=={ver} gave no sdist tarball in {tmp}; log {log}")
        prefix = f"{tarballs[0].name[: -len('.tar.gz')]}/vendor/llama.cpp/"
        with tarfile.open(tarballs[0]) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(prefix)]
            if not members:
                raise ToolsError(f"{tarballs[0].name} holds no vendor/llama.cpp; cannot build llama.cpp's tools")
            tf.extractall(tmp / "x", members=members, filter="data")
        shutil.rmtree(src, ignore_errors=True)
        (tmp / "x" / prefix).rename(src)
    return src


def _binaries(cache: Path) -> dict[str, Path]:
    return {t: cache / "build" / "bin" / t for t in TARGETS}


def _built(cache: Path) -> bool:
    return (cache / STAMP).is_file() and all(p.is_file() for p in _binaries(cache).values())


def _ninja(log: Path) -> str:
    found = shutil.which("ninja")
    if found:
        return found
    _run([sys.executable, "-m", "pip", "install", "-q", "ninja"], log, "pip install ninja")
    found = shutil.which("ninja") or str(Path(sys.executable).parent / "ninja")
    if not Path(found).is_file():
        raise ToolsError(f"pip install ninja did not provide a ninja executable; log {log}")
    return found


def build(verbose: bool = True) -> dict:
    """Fetch and build if needed (under the lock); return the stamp (version, paths, build seconds)."""
    ver = version()
    cache = cache_dir(ver)
    if _built(cache):
        return json.loads((cache / STAMP).read_text())
    with _locked(cache):
        if _built(cache):  # someone else finished it while we waited
            return json.loads((cache / STAMP).read_text())
        log = cache / "build.log"
        log.write_text("")
        say = (lambda m: print(m, file=sys.stderr, flush=True)) if verbose else (lambda m: None)
        say(f"building llama.cpp tools of llama-cpp-python {ver} in {cache} (log {log}) ...")
        t0 = time.perf_counter()
        src = _extract(cache, ver, log)
        t_fetch = time.perf_counter() - t0
        bdir = cache / "build"
        shutil.rmtree(bdir, ignore_errors=True)
        ninja = _ninja(log)
        _run(
            ["cmake", "-S", str(src), "-B", str(bdir), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", *CMAKE_FLAGS],
            log,
            "cmake configure",
        )
        _run(["cmake", "--build", str(bdir), "-j", str(JOBS), "--target", *TARGETS], log, "cmake build")
        missing = [str(p) for p in _binaries(cache).values() if not p.is_file()]
        if missing:
            raise ToolsError(f"the build finished but left no {', '.join(missing)}; log {log}")
        stamp = {
            "llama_cpp_python": ver,
            "source_dir": str(src),
            "tools": {k: str(v) for k, v in _binaries(cache).items()},
            "fetch_seconds": round(t_fetch, 1),
            "build_seconds": round(time.perf_counter() - t0 - t_fetch, 1),
            "jobs": JOBS,
            "loadavg_at_end": os.getloadavg(),
            "cmake_flags": list(CMAKE_FLAGS),
        }
        tmp = cache / (STAMP + ".partial")
        tmp.write_text(json.dumps(stamp, indent=2))
        tmp.rename(cache / STAMP)
        say(
            f"built in {stamp['fetch_seconds'] + stamp['build_seconds']:.0f} s "
            f"(fetch {stamp['fetch_seconds']:.0f} s, compile {stamp['build_seconds']:.0f} s)"
        )
        return stamp


def tools() -> dict[str, Path]:
    """{'llama-quantize': Path, 'llama-imatrix': Path, 'llama-perplexity': Path}, built on first use."""
    return {k: Path(v) for k, v in build()["tools"].items()}


def source_dir() -> Path:
    """The llama.cpp source tree (convert_hf_to_gguf.py, gguf-py/, tools/); extracted on first use, no build."""
    ver = version()
    cache = cache_dir(ver)
    src = cache / "llama.cpp"
    if (src / "convert_hf_to_gguf.py").is_file():
        return src
    with _locked(cache):
        log = cache / "extract.log"
        return _extract(cache, ver, log)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--source-only", action="store_true", help="only fetch and extract the llama.cpp source")
    args = ap.parse_args()
    try:
        if args.source_only:
            out = {"source_dir": str(source_dir())}
        else:
            out = build()
    except ToolsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.get("tools", {}).items():
            print(f"{k}\t{v}")
        print(f"source\t{out['source_dir']}")
        if "build_seconds" in out:
            print(f"built\tfetch {out['fetch_seconds']} s + compile {out['build_seconds']} s, -j{out['jobs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
