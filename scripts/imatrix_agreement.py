#!/usr/bin/env python
"""Issue 15 item 1 on the small trained model (scripts/train_small.py): quantizing with our importance matrix
and with llama-imatrix's gives files of the same mean KLD against the source (target: within 2 %).

Both matrices come from the same F32 GGUF / checkpoint, the built-in calibration text and the same context;
each type is quantized once with each matrix, and llama.cpp's logits on held-out text are compared with the
float32 reference forward. For scale, llama-imatrix's own matrix is also dithered by one float32 ulp
(each value times 1 + 2^-23 n, n ~ N(0, 1), three seeds): how far a file's KLD moves when nothing but rounding
changes. Prints one row per type: KLD with llama's matrix, with ours, the difference in %, the dithers' %.

    flock /tmp/heavy.lock python scripts/imatrix_agreement.py [--ctx 256] [--types q4_k_m,iq4_xs]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from quality_imatrix import llama_logits  # noqa: E402


def dithered(src: Path, out: Path, seed: int) -> Path:
    from exaone_gguf.gguf_io import read_gguf
    from exaone_gguf.quantize.imatrix import write_imatrix

    f = read_gguf(src)
    raw = {t.name: f.tensor_bytes(t).view("<f4").copy() for t in f.tensors}
    rng = np.random.default_rng(seed)
    stats = {}
    for key in sorted(raw):
        if key.endswith(".in_sum2"):
            name = key[: -len(".in_sum2")]
            counts = raw[name + ".counts"]
            noisy = raw[key] * (1 + 2.0**-23 * rng.standard_normal(raw[key].size))
            stats[name] = (noisy.astype(np.float32).reshape(counts.size, -1), counts)
    write_imatrix(out, stats, f.get("imatrix.datasets"), f.get("imatrix.chunk_count"), f.get("imatrix.chunk_size"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--types", default="q4_k_m,iq4_xs")
    args = ap.parse_args()

    import llama_tools
    import train_small
    from tokenizers import Tokenizer

    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.from_gguf import quantize_gguf
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.model import forward
    from exaone_gguf.model.imatrix import collect_imatrix
    from exaone_gguf.model.texts import checkpoint_calibration_text
    from exaone_gguf.validate.metrics import compare_logits

    src = train_small.small_model(log=lambda s: print(s, file=sys.stderr))
    tokens = [1] + train_small.heldout_tokens(Tokenizer.from_file(str(src / "tokenizer.json")))
    ckpt = load_checkpoint(src)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text = work / "calibration.txt"
        text.write_text(checkpoint_calibration_text(ckpt.tokenizer), encoding="utf-8")
        f32 = convert(src, work / "f32.gguf", ConvertOptions(outtype="f32")).output
        ours = collect_imatrix(src, work / "ours.gguf", text=text, ctx=args.ctx).output
        theirs = work / "llama.gguf"
        cmd = [str(llama_tools.tools()["llama-imatrix"]), "-m", str(f32), "-f", str(text), "-c", str(args.ctx)]
        run = subprocess.run(
            [*cmd, "-o", str(theirs), "--no-ppl", "--parse-special", "-t", "2"], capture_output=True, text=True
        )
        if run.returncode != 0:
            sys.exit(f"llama-imatrix failed:\n{run.stderr[-3000:]}")
        dithers = [dithered(theirs, work / f"dither{s}.gguf", s) for s in range(3)]
        ref = forward(ckpt, tokens)

        def kld(qtype: str, imatrix: Path) -> float:
            out = quantize_gguf(f32, work / f"{imatrix.stem}-{qtype}.gguf", qtype, imatrix=imatrix).output
            return compare_logits(ref, llama_logits(out, tokens), tokens).mean_kld

        print(f"{'type':<8} {'KLD llama':>11} {'KLD ours':>11} {'ours vs llama':>14}  one-ulp dithers of llama's")
        for qtype in args.types.split(","):
            base = kld(qtype, theirs)
            diff = 100 * (kld(qtype, ours) - base) / base
            noise = ", ".join(f"{100 * (kld(qtype, d) - base) / base:+.2f} %" for d in dithers)
            print(f"{qtype:<8} {base:>11.6f} {base * (1 + diff / 100):>11.6f} {diff:>+12.2f} %  {noise}")


if __name__ == "__main__":
    main()
