#!/usr/bin/env python
"""Train a small EXAONE-4-shaped model on the spot, for quality figures with real structure (issue 15).

Random tiny weights make every tensor look alike; a model trained for a few minutes does not. The shape is
EXAONE 4.0's (Exaone4ForCausalLM: GQA, QK-norm, post-norms, llama3 rope scaling, tied embeddings), made with
`make-tiny exaone4` (its own byte-level BPE tokenizer, 1195 tokens) at 4 layers x 256 hidden, 768 intermediate,
and a vocabulary cut to 1280 rows. The training text is Python's own standard library source, which every
Python installation carries (offline, deterministic file order). torch float32 on CPU, AdamW, a fixed seed.

The checkpoint is cached outside the repository, in ~/.cache/exaone-gguf/small-exaone4-v1/ (or
$EXAONE_GGUF_TOOLS_CACHE/small-exaone4-v1/); a finished one (train.json written last) is returned at once.

    python scripts/train_small.py [--steps N] [--json]      # prints the checkpoint directory
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

NAME = "small-exaone4-v1"
VOCAB = 1280
SEQ, BATCH = 64, 4


def cache_dir() -> Path:
    root = os.environ.get("EXAONE_GGUF_TOOLS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "exaone-gguf") / NAME


def corpus_files() -> list[Path]:
    """Standard-library modules in a fixed order (sorted paths), tests and vendored packages left out."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.glob("*.py") if not p.name.startswith("test"))
    return [p for p in files if p.stat().st_size > 2000]


def corpus_tokens(tok, files: list[Path], limit: int) -> list[int]:
    ids: list[int] = []
    for p in files:
        ids += tok.encode(p.read_text(encoding="utf-8", errors="replace"), add_special_tokens=False).ids
        if len(ids) >= limit:
            break
    return ids[:limit]


def heldout_tokens(tok, n: int = 256) -> list[int]:
    """Tokens the model was not trained on: the last corpus file (training stops well before it)."""
    return tok.encode(corpus_files()[-1].read_text(encoding="utf-8"), add_special_tokens=False).ids[:n]


def train(out: Path, steps: int, seed: int = 0, log=print) -> dict:
    import numpy as np
    import torch
    from tokenizers import Tokenizer
    from transformers import Exaone4Config, Exaone4ForCausalLM

    from exaone_gguf.tiny import make_tiny

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="small-exaone4-", dir=out.parent))
    try:
        base = make_tiny(
            "exaone4",
            work / "base",
            seed=seed,
            layers=4,
            hidden=256,
            heads=4,
            kv_heads=2,
            head_dim=64,
            intermediate=768,
        )
        cfg = json.loads((base / "config.json").read_text())
        cfg.update(vocab_size=VOCAB, torch_dtype="float32", _name_or_path=f"exaone-gguf/{NAME}")
        (base / "config.json").write_text(json.dumps(cfg, indent=2))
        tok = Tokenizer.from_file(str(base / "tokenizer.json"))
        ids = np.array(corpus_tokens(tok, corpus_files(), SEQ * BATCH * steps + SEQ), dtype=np.int64)
        model = Exaone4ForCausalLM(Exaone4Config.from_pretrained(base))
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
        t0, losses = time.time(), []
        for step in range(steps):
            start = step * SEQ * BATCH
            x = torch.from_numpy(ids[start : start + SEQ * BATCH].reshape(BATCH, SEQ))
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 10 == 0 or step == steps - 1:
                log(f"step {step:4d}/{steps}  loss {loss.item():.3f}  {time.time() - t0:.0f} s")
        final = work / "model"
        model.save_pretrained(final, safe_serialization=True)
        for f in base.iterdir():
            if f.name not in ("config.json", "model.safetensors") and f.is_file():
                shutil.copy2(f, final / f.name)
        info = {
            "steps": steps,
            "tokens": int(steps * SEQ * BATCH),
            "first_loss": losses[0],
            "final_loss": sum(losses[-10:]) / min(10, len(losses)),
            "seconds": round(time.time() - t0, 1),
            "corpus": "Python standard library source (sorted *.py)",
            "seed": seed,
        }
        (final / "train.json").write_text(json.dumps(info, indent=2))
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def small_model(steps: int = 80, log=print) -> Path:
    """The trained checkpoint directory, trained now if it is not cached yet."""
    out = cache_dir()
    if not (out / "train.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        train(out, steps, log=log)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = small_model(args.steps, log=lambda s: print(s, file=sys.stderr))
    info = json.loads((out / "train.json").read_text())
    print(json.dumps({"dir": str(out), **info}) if args.json else out)


if __name__ == "__main__":
    main()
