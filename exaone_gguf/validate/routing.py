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
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from exaone_gguf.validate.results import CheckResult

TOPK_NAME = "ffn_moe_topk-"  # llama-graph.cpp: cb(selected_experts, "ffn_moe_topk", il) -> "ffn_moe_topk-{il}"
NEAR_TIE = 1e-3  # selection-score margin (sigmoid scores in (0, 1), plus the bias) below which a flip is a tie
MIN_AGREEMENT = 0.9  # a float file's layer agreeing on fewer positions (near-ties aside) fails the check
GGML_TYPE_I32 = 26


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
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_backend_tensor_get.restype = None
    return lib


def llama_routes(llm, tokens: list[int]) -> dict[int, np.ndarray]:
    """layer -> [n_tokens, n_expert_used] expert ids llama.cpp selects for `tokens`, read from the graph of a
    fresh context on `llm`'s loaded model (same context parameters as `llm`'s, plus the eval callback)."""
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
            ts = _Tensor.from_address(t)
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
    """Per MoE layer: positions, identical chosen sets, near-ties (reference margin < NEAR_TIE), and how many
    positions differ outside near-ties."""
    out = {}
    for layer in sorted(ref):
        top, margin = ref[layer]
        ids = got.get(layer)
        if ids is None or ids.shape != top.shape:
            out[layer] = {"positions": len(top), "missing": True}
            continue
        same = (np.sort(top, axis=1) == np.sort(ids, axis=1)).all(axis=1)
        tie = margin < NEAR_TIE
        out[layer] = {
            "positions": int(len(top)),
            "same": int(same.sum()),
            "agreement_pct": round(100.0 * float(same.mean()), 2),
            "near_ties": int(tie.sum()),
            "differ_outside_ties": int((~same & ~tie).sum()),
        }
    return out


def check_routing(
    got: dict[int, np.ndarray] | None, ref: dict[int, tuple[np.ndarray, np.ndarray]], gate: bool, why: str = ""
) -> CheckResult:
    """The routing figure as a check: llama.cpp's choice `got` on the file against the source reference's `ref`.
    With `gate` (a float file) a layer where more than 1 - MIN_AGREEMENT of the positions outside near-ties
    pick other experts fails; otherwise that is a warning (a quantized router input may move choices)."""
    name = "routing: same experts as the reference"
    if got is None:
        return CheckResult(name, "skip", f"llama.cpp's expert choice could not be read ({why})")
    per = agreement(ref, got)
    missing = [layer for layer, d in per.items() if d.get("missing")]
    if missing:
        return CheckResult(name, "fail", f"llama.cpp selected no experts (or other counts) in layers {missing}", per)
    bad = [layer for layer, d in per.items() if d["differ_outside_ties"] > (1 - MIN_AGREEMENT) * d["positions"]]
    ties = sum(d["near_ties"] for d in per.values())
    figures = ", ".join(f"{layer}: {d['agreement_pct']:.1f}%" for layer, d in per.items())
    detail = f"same experts per MoE layer {figures}; {ties} near-tie position(s) (margin < {NEAR_TIE:g})"
    if bad:
        return CheckResult(name, "fail" if gate else "warn", f"layers {bad} pick other experts: {detail}", per)
    return CheckResult(name, "pass", detail, per)
