"""The sha256 of every output the CLI makes from the tiny families: a before/after record for code moves.

Every tiny family x every outtype (one convert each), a release folder, split shards, a GGUF -> GGUF quantize, an
importance matrix and a file quantized with it, the vision projector, the --target-bpw and override plans. Run it on
two checkouts and compare the JSON files: a move that changes no computation leaves every hash as it was.

    python scripts/matrix_hashes.py OUT.json [--work DIR]
    python scripts/matrix_hashes.py --compare BEFORE.json AFTER.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

OUTTYPES = ["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k", "iq4_xs"]


def cli(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "exaone_gguf", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"exaone-gguf {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def families() -> list[str]:
    from exaone_gguf.tiny import FAMILIES  # the list make-tiny offers

    return list(FAMILIES)


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record(root: Path) -> dict[str, str]:
    """Every regular file under root, by relative path (reports carry timings and paths: left out)."""
    return {
        str(p.relative_to(root)): digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix not in {".json", ".md", ".png", ".log"} and p.name != "SHA256SUMS"
    }


def build(work: Path) -> dict[str, str]:
    ck, out = work / "ckpt", work / "out"
    out.mkdir(parents=True)
    fams = families()
    for fam in fams:
        src = ck / fam
        cli("make-tiny", fam, str(src))
        for t in OUTTYPES:
            cli("convert", str(src), "-o", str(out / f"{fam}-{t}.gguf"), "--outtype", t)
    base = ck / "exaone4"
    cli("convert", str(base), "-o", str(out / "release") + "/", "--outtype", "bf16,q8_0,q4_k_m")
    cli("convert", str(base), "-o", str(out / "split.gguf"), "--outtype", "q8_0", "--split-max-tensors", "7")
    cli("quantize", str(out / "exaone4-bf16.gguf"), str(out / "requant-q4_k_m.gguf"), "q4_k_m")
    cli("imatrix", str(base), "-o", str(out / "exaone4.imatrix"))
    cli("convert", str(base), "-o", str(out / "imatrix-iq4_xs.gguf"), "--outtype", "iq4_xs",
        "--imatrix", str(out / "exaone4.imatrix"))  # fmt: skip
    cli("convert", str(base), "-o", str(out / "overrides.gguf"), "--outtype", "q4_k_m",
        "--tensor-type", "ffn_down=q2_k", "--leave-output-tensor")  # fmt: skip
    cli("convert", str(base), "-o", str(out / "pure.gguf"), "--outtype", "q4_k_m", "--pure")
    cli("convert", str(base), "-o", str(out / "target.gguf"), "--outtype", "q4_k_m", "--target-bpw", "5.5",
        "--imatrix", str(out / "exaone4.imatrix"))  # fmt: skip
    vision = [f for f in fams if "4_5" in f or "4.5" in f]
    for fam in vision:
        cli("convert", str(ck / fam), "-o", str(out / f"{fam}-mmproj.gguf"), "--mmproj")
    return record(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path)
    a = ap.parse_args()
    if a.compare:
        before, after = (json.loads(p.read_text()) for p in a.compare)
        diff = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        print(f"{len(before)} files before, {len(after)} after, {len(diff)} differ")
        for k in diff:
            print(f"  {k}: {before.get(k, '-')[:16]} -> {after.get(k, '-')[:16]}")
        raise SystemExit(1 if diff else 0)
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        hashes = build(Path(tmp))
    a.out.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} files hashed -> {a.out}")


if __name__ == "__main__":
    main()
