"""Routing agreement of a MoE file: per layer, how often llama.cpp picks the same experts as the reference forward.

llama.cpp names the selected-expert tensor of layer il `ffn_moe_topk-{il}` (build_moe_ffn in src/llama-graph.cpp:
an I32 view [n_expert_used, n_tokens] of the argsort of the routing scores). A second context on the runner's
already loaded model, with an eval callback (llama_context_params.cb_eval, ggml_backend_sched_eval_callback),
asks the scheduler to stop after each of those tensors and copies its ids out with ggml_backend_tensor_get. The
reference forward records its own choice per layer and token (reference/exaone_moe.py `route`) together with
the margin between the last chosen and the first unchosen expert's selection score: a position whose margin is
below NEAR_TIE is a near-tie, where two float32 implementations may legitimately pick differently.

A layer's agreement counts positions whose chosen set is identical. Routing in a layer depends only on the
hidden state entering it, so a file whose experts are misplaced in layer L routes layer L as the source does
and diverges from layer L+1 on; the figure shows where a file's computation parts from the source's.

The tensor is read through a ctypes mirror of struct ggml_tensor; `check_layout` compares it, on every tensor
read, with what ggml's own accessors say about the same tensor (name, element count, data pointer, byte size),
so a ggml whose struct layout differs fails with the field named instead of yielding wrong expert ids.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from exaone_gguf.validate.results import CheckResult

TOPK_NAME = "ffn_moe_topk-"  # llama-graph.cpp: cb(selected_experts, "ffn_moe_topk", il) -> "ffn_moe_topk-{il}"
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
GGML_TYPE_I32 = GGMLQuantizationType.I32


class _Tensor(ctypes.Structure):
    """struct ggml_tensor (ggml/include/ggml.h of the llama.cpp llama-cpp-python vendors), up to `name`."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
    ]


def _ggml_base() -> ctypes.CDLL:
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    lib = ctypes.CDLL(str(next(lib_dir.glob("libggml-base.so*"))))
    lib.ggml_get_name.argtypes, lib.ggml_get_name.restype = [ctypes.c_void_p], ctypes.c_char_p
    lib.ggml_nbytes.argtypes, lib.ggml_nbytes.restype = [ctypes.c_void_p], ctypes.c_size_t
    lib.ggml_nelements.argtypes, lib.ggml_nelements.restype = [ctypes.c_void_p], ctypes.c_int64
    lib.ggml_get_data.argtypes, lib.ggml_get_data.restype = [ctypes.c_void_p], ctypes.c_void_p
    lib.ggml_blck_size.argtypes, lib.ggml_blck_size.restype = [ctypes.c_int], ctypes.c_int64
    lib.ggml_type_size.argtypes, lib.ggml_type_size.restype = [ctypes.c_int], ctypes.c_size_t
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_backend_tensor_get.restype = None
    return lib


def check_layout(lib: ctypes.CDLL, t: int, ts: ctypes.Structure) -> None:
    """Raise RuntimeError unless the mirror `ts` of the ggml_tensor at address `t` reads what ggml's accessors
    read on it: the name, the element count (ne), the data pointer, a type ggml knows, and the byte size from
    type, ne and nb (ggml_nbytes' own formula)."""
    count = 1
    for n in ts.ne:
        count *= n
    try:  # ggml's type tables are read only with a type it has
        known = GGMLQuantizationType(ts.type) is not None
    except ValueError:
        known = False
    checks = [
        ("name", ts.name.decode(errors="replace"), lib.ggml_get_name(t).decode(errors="replace")),
        ("ne", count, lib.ggml_nelements(t)),
        ("data", ts.data, lib.ggml_get_data(t)),
        ("type", ts.type if known else f"{ts.type} (no ggml type)", ts.type),
    ]
    if known:
        blck, size = lib.ggml_blck_size(ts.type), lib.ggml_type_size(ts.type)
        first = size if blck == 1 else ts.ne[0] * ts.nb[0] // blck
        rest = sum((n - 1) * b for n, b in list(zip(ts.ne, ts.nb))[0 if blck == 1 else 1 :])
        checks.append(("nb", first + rest, lib.ggml_nbytes(t)))
    for field, mirror, ggml in checks:
        if mirror != ggml:
            raise RuntimeError(
                f"the ctypes mirror of struct ggml_tensor does not match the loaded ggml (field {field!r}: the mirror "
                f"reads {mirror!r}, ggml reports {ggml!r}); llama-cpp-python's ggml has another struct layout, and "
                "exaone_gguf/validate/routing.py's _Tensor must follow its ggml.h"
            )


def llama_routes(llm, tokens: list[int], mirror: type[ctypes.Structure] = _Tensor) -> dict[int, np.ndarray]:
    """layer -> [n_tokens, n_expert_used] expert ids llama.cpp selects for `tokens`, read from the graph of a
    fresh context on `llm`'s loaded model (same context parameters as `llm`'s, plus the eval callback), each
    selection tensor read through `mirror` (struct ggml_tensor) after `check_layout`."""
    import llama_cpp

    lib = _ggml_base()
    routes: dict[int, np.ndarray] = {}
    errors: list[str] = []

    def observe(t: int, ask: bool, _user: int) -> bool:
        name = lib.ggml_get_name(t).decode(errors="replace")
        if not name.startswith(TOPK_NAME):
            return not ask  # ask: not this one; after compute: go on
        if ask:
            return True
        try:
            ts = mirror.from_address(t)
            check_layout(lib, t, ts)
            if ts.type != GGML_TYPE_I32:
                raise ValueError(f"{name} has ggml type {ts.type}, not I32")
            k, n, row = ts.ne[0], ts.ne[1], ts.nb[1] // 4
            buf = np.empty(lib.ggml_nbytes(t) // 4 + 1, np.int32)
            lib.ggml_backend_tensor_get(t, buf.ctypes.data, 0, lib.ggml_nbytes(t))
            ids = np.stack([buf[i * row : i * row + k] for i in range(n)])
            layer = int(name[len(TOPK_NAME) :])
            routes[layer] = np.concatenate([routes[layer], ids]) if layer in routes else ids
        except Exception as e:  # noqa: BLE001 - an exception must not cross the C callback
            errors.append(f"{name}: {e}")
        return True

    callback = llama_cpp.ggml_backend_sched_eval_callback(observe)  # kept alive until the context is freed
    params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
    params.cb_eval = callback
    params.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not make a context with the eval callback")
    step = params.n_batch
    batch = llama_cpp.llama_batch_init(step, 0, 1)
    try:
        for i in range(0, len(tokens), step):
            # every position an output (as logits_all): else llama.cpp runs the last layer on the last token only
            chunk = tokens[i : i + step]
            batch.n_tokens = len(chunk)
            for j, tok in enumerate(chunk):
                batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = tok, i + j, 1, True
                batch.seq_id[j][0] = 0
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed in the routing run")
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return routes


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
