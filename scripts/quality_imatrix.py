#!/usr/bin/env python
"""Item 3 of issue 15: Q4_K_M and IQ4_XS with and without our importance matrix, and `--target-bpw` at Q4_K_M's
size with the same matrix, on the small trained model (scripts/train_small.py) and the tiny families. Prints:
model, type, bits per weight, mean KLD, same top-1 (ratio: with / without the matrix; for the target row,
target / Q4_K_M with the matrix).

For each model: the checkpoint is converted to F32, `exaone-gguf imatrix` collects the matrix from the source
(built-in calibration text), each type is quantized without and with it, and llama.cpp's logits for evaluation
tokens are compared with the float32 reference forward's (validate.metrics.compare_logits). Evaluation tokens:
held-out standard-library source for the trained model, the built-in evaluation text for the tiny ones.

    python scripts/quality_imatrix.py [--tiny exaone4,exaone3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

TYPES = ("q4_k_m", "iq4_xs")


def llama_logits(gguf: Path, tokens: list[int]):
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(
        str(gguf),
        n_ctx=max(64, len(tokens)),
        n_batch=len(tokens),
        logits_all=True,
        verbose=False,
        n_threads=2,
        type_k=0,
        type_v=0,
    )
    llm.eval(tokens)
    out = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    llm.close()
    return out


def measure(name: str, src: Path, tokens: list[int], work: Path, ctx: int = 128) -> list[dict]:
    from exaone_gguf.convert.driver import convert
    from exaone_gguf.convert.from_gguf import quantize_gguf
    from exaone_gguf.convert.options import ConvertOptions
    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.gguf_io.inspect import inspect_gguf
    from exaone_gguf.model import forward
    from exaone_gguf.model.imatrix import collect_imatrix
    from exaone_gguf.model.sensitivity import kld_probe
    from exaone_gguf.quantize.target import Target
    from exaone_gguf.validate.metrics import compare_logits

    f32 = convert(src, work / f"{name}-f32.gguf", ConvertOptions(outtype="f32", force=True)).output
    imx = work / f"{name}-imatrix.gguf"
    collect_imatrix(src, imx, ctx=ctx, force=True)
    ref = forward(load_checkpoint(src), tokens)
    q4_bpw = None
    rows = []
    ckpt = load_checkpoint(src)
    for t in TYPES:
        for use in (False, True):
            out = work / f"{name}-{t}{'-imx' if use else ''}.gguf"
            quantize_gguf(f32, out, t, imatrix=imx if use else None, force=True)
            c = compare_logits(ref, llama_logits(out, tokens), tokens)
            bpw = inspect_gguf(out)["totals"]["bits_per_weight"]
            rows.append(
                {"model": name, "type": t, "imatrix": use, "bpw": bpw, "mean_kld": c.mean_kld, "same_top1": c.same_top1}
            )
            if t == "q4_k_m" and use:
                q4_bpw = bpw
    out = work / f"{name}-target.gguf"
    quantize_gguf(f32, out, "q4_k_m", imatrix=imx, force=True, target=Target(bpw=q4_bpw), probe=kld_probe(ckpt))
    c = compare_logits(ref, llama_logits(out, tokens), tokens)
    bpw = inspect_gguf(out)["totals"]["bits_per_weight"]
    rows.append(
        {"model": name, "type": "target", "imatrix": True, "bpw": bpw, "mean_kld": c.mean_kld, "same_top1": c.same_top1}
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", default="exaone4,exaone3,exaone3.5,exaone4-hybrid")
    ap.add_argument("--no-trained", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.model.imatrix import tokenize
    from exaone_gguf.model.texts import EVAL_TEXT
    from exaone_gguf.tiny import make_tiny

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.no_trained:
            import train_small

            src = train_small.small_model(log=lambda s: print(s, file=sys.stderr))
            tokens = [1] + train_small.heldout_tokens(Tokenizer.from_file(str(src / "tokenizer.json")))
            rows += measure("trained-exaone4", src, tokens, work)
        for fam in [f for f in args.tiny.split(",") if f]:
            src = make_tiny(fam, work / f"tiny-{fam}", force=True)
            tokens = tokenize(load_checkpoint(src), EVAL_TEXT)[0][:256]
            rows += measure(f"tiny-{fam}", src, tokens, work)
    print(f"{'model':<22} {'type':<8} {'imatrix':<8} {'bpw':>6} {'mean KLD':>10} {'same top-1':>10}  ratio")
    for r in rows:
        if r["type"] == "target":  # against Q4_K_M with the same matrix
            base = next(b for b in rows if b["model"] == r["model"] and b["type"] == "q4_k_m" and b["imatrix"])
        else:
            base = next(b for b in rows if b["model"] == r["model"] and b["type"] == r["type"] and not b["imatrix"])
        ratio = f"{r['mean_kld'] / base['mean_kld']:.3f}" if r["imatrix"] else ""
        bpw = f"{r['bpw']:.3f}" if isinstance(r["bpw"], (int, float)) else str(r["bpw"])
        print(
            f"{r['model']:<22} {r['type']:<8} {'yes' if r['imatrix'] else 'no':<8} {bpw:>6} "
            f"{r['mean_kld']:>10.5f} {r['same_top1']:>9.1f}%  {ratio}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
