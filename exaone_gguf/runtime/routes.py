"""MoE routes inside llama.cpp: which experts each layer picks for each token, read from the running graph.

llama.cpp names the selected-expert tensor of layer il `ffn_moe_topk-{il}` (build_moe_ffn in src/llama-graph.cpp:
an I32 view [n_expert_used, n_tokens] of the argsort of the routing scores). A second context on the runner's
already loaded model, with an eval callback (llama_context_params.cb_eval, ggml_backend_sched_eval_callback),
asks the scheduler to stop after each of those tensors and copies its ids out with ggml_backend_tensor_get.

The tensor is read through a ctypes mirror of struct ggml_tensor; `check_layout` compares it, on every tensor
read, with what ggml's own accessors say about the same tensor (name, element count, data pointer, byte size),
so a ggml whose struct layout differs fails with the field named instead of yielding wrong expert ids.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

TOPK_NAME = "ffn_moe_topk-"  # llama-graph.cpp: cb(selected_experts, "ffn_moe_topk", il) -> "ffn_moe_topk-{il}"
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
                "exaone_gguf/runtime/routes.py's _Tensor must follow its ggml.h"
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
