"""Routing agreement of a MoE file: per layer, how often llama.cpp picks the same experts as the reference forward.

llama.cpp's choices are read from its running graph (runtime/routes.py). The reference forward records its own
choice per layer and token (model/forwards/exaone_moe.py `route`) together with the margin between the last chosen
and the first unchosen expert's selection score: a position whose margin is below NEAR_TIE is a near-tie, where two
float32 implementations may legitimately pick differently.

A layer's agreement counts positions whose chosen set is identical. Routing in a layer depends only on the
hidden state entering it, so a file whose experts are misplaced in layer L routes layer L as the source does
and diverges from layer L+1 on; the figure shows where a file's computation parts from the source's.
"""

from __future__ import annotations

import numpy as np

from exaone_gguf.validate.results import CheckResult

NEAR_TIE = 1e-3  # selection-score margin (sigmoid scores in (0, 1), plus the bias) below which a flip is a tie
MIN_AGREEMENT = 0.9  # a float file's layer agreeing on fewer positions (near-ties aside) fails the check
# A quantized file's floor on each MoE layer's overlap (percent of chosen experts shared with the reference), by
# the file type's leading letters (first match; anything else: QUANT_FLOOR_LOW). Measured on tiny K-EXAONE (seeds 0
# and 1, 3 MoE layers, 8 experts top-2, 256 tokens of the built-in text), lowest layer of honest files: Q8_0 96.7 %,
# Q4_K_M 77.3 %, Q2_K 60.4 %. Damage, same files: experts 0 and 3 of layer 2 swapped give 88.5-91.6 % (Q8_0),
# 76.0-79.7 % (Q4_K_M) in layer 3; layer 1's experts stacked in reverse give 53.9-65.4 % in layers 2-3 at Q8_0 and
# Q4_K_M, 48.8-56.8 % at Q2_K (the router's bias makes a scrambled choice still share about half its experts, so
# at 2-3 bits the routing figure cannot tell damage from rounding: the tensor check does). The floors allow about
# 3x the honest disagreement at 6-8 bits and 1.5x below.
QUANT_FLOORS = ((("Q8", "Q6"), 90.0), (("Q5", "Q4", "IQ4"), 65.0))
QUANT_FLOOR_LOW = 45.0


def agreement(ref: dict[int, tuple[np.ndarray, np.ndarray]], got: dict[int, np.ndarray]) -> dict[int, dict]:
    """Per MoE layer: positions, identical chosen sets, near-ties (reference margin < NEAR_TIE), how many
    positions differ outside near-ties, and the mean share of chosen experts in common (overlap)."""
    out = {}
    for layer in sorted(ref):
        top, margin = ref[layer]
        ids = got.get(layer)
        if ids is None or ids.shape != top.shape:
            out[layer] = {"positions": len(top), "missing": True}
            continue
        same = (np.sort(top, axis=1) == np.sort(ids, axis=1)).all(axis=1)
        common = (top[:, :, None] == ids[:, None, :]).any(axis=2).mean(axis=1)
        tie = margin < NEAR_TIE
        out[layer] = {
            "positions": int(len(top)),
            "same": int(same.sum()),
            "agreement_pct": round(100.0 * float(same.mean()), 2),
            "near_ties": int(tie.sum()),
            "differ_outside_ties": int((~same & ~tie).sum()),
            "overlap_pct": round(100.0 * float(common.mean()), 2),
        }
    return out


def routing_floor(type_name: str) -> float | None:
    """The least overlap (percent of chosen experts in common with the reference) a layer of a quantized file of
    `type_name` may show; None for a float file (judged by MIN_AGREEMENT instead)."""
    key = type_name.upper().removeprefix("MOSTLY_")
    if key in ("F32", "F16", "BF16"):
        return None
    return next((floor for prefixes, floor in QUANT_FLOORS if key.startswith(prefixes)), QUANT_FLOOR_LOW)


def check_routing(
    got: dict[int, np.ndarray] | None, ref: dict[int, tuple[np.ndarray, np.ndarray]], type_name: str, why: str = ""
) -> CheckResult:
    """The routing figure as a check: llama.cpp's choice `got` on the file against the source reference's `ref`.
    A float file fails where a layer's positions outside near-ties pick other experts on more than 1 -
    MIN_AGREEMENT of the positions; a quantized file (its rounded router input moves some choices) where a
    layer's overlap is below routing_floor(type_name). A choice that could not be read (`got` None) fails with
    the reason `why`."""
    name = "routing: same experts as the reference"
    if got is None:
        return CheckResult(name, "fail", f"llama.cpp's expert choice could not be read: {why}")
    per = agreement(ref, got)
    missing = [layer for layer, d in per.items() if d.get("missing")]
    if missing:
        return CheckResult(name, "fail", f"llama.cpp selected no experts (or other counts) in layers {missing}", per)
    floor = routing_floor(type_name)
    if floor is None:
        bad = [layer for layer, d in per.items() if d["differ_outside_ties"] > (1 - MIN_AGREEMENT) * d["positions"]]
        why_bad = f"pick other experts on over {1 - MIN_AGREEMENT:.0%} of positions"
    else:
        bad = [layer for layer, d in per.items() if d["overlap_pct"] < floor]
        why_bad = f"share under {floor:g}% of their experts with the reference (the floor for {type_name})"
    ties = sum(d["near_ties"] for d in per.values())
    figures = ", ".join(
        f"{layer}: {d['agreement_pct']:.1f}% ({d['overlap_pct']:.1f}% overlap)" for layer, d in per.items()
    )
    detail = f"same experts per MoE layer {figures}; {ties} near-tie position(s) (margin < {NEAR_TIE:g})"
    if bad:
        return CheckResult(name, "fail", f"layers {bad} {why_bad}: {detail}", per)
    return CheckResult(name, "pass", detail, per)
