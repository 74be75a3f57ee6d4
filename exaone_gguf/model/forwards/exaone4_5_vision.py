"""EXAONE 4.5's vision tower (a Qwen2.5-VL-style ViT with GQA) and its patch merger, in float32 numpy.

pixels = (image / 255 - mean) / std                            # [3, H, W]; H and W multiples of 2 x patch
x = patch_embd(pixels)                                         # conv3d over a frame repeated twice = the sum
                                                               # of the kernel's two temporal halves; one row per
                                                               # 14x14 patch, 2x2 patches of a merge unit adjacent
cos, sin = 2-D rotary tables                                   # head dims [h-angle | w-angle | h-angle | w-angle]
per block i:
    groups = all patches if i is a full-attention block        # fullatt_block_indexes
             else the windows of window_size pixels            # (window_size / patch / 2) merge units a side
    x = x + attn_out(attention within each group of rope(q), rope(k), v from attn_qkv(rms(x) * ln1))   # GQA
    x = x + ffn_down(silu(ffn_gate(h)) * ffn_up(h)), h = rms(x) * ln2
y = rms(x) * post_ln, viewed as one row of 4 x hidden per merge unit
embeddings = mm.2(gelu(mm.0(y)))                               # [n_units, out_hidden], units in raster order

Weights come from `get(name)` under the projector file's tensor names (v.blk.N.attn_qkv.weight, ...) in
numpy layout [out, in], from the source checkpoint or dequantized from a GGUF. Attention is computed in the
patches' own order with a group mask, so transformers' and llama.cpp's window permutations are not needed.
"""

from __future__ import annotations

from math import erf
from typing import Callable

import numpy as np

from exaone_gguf.model.ops import apply_rope, rmsnorm, silu
from exaone_gguf.vision import VisionSpec

Get = Callable[[str], np.ndarray]
_erf = np.vectorize(erf, otypes=[np.float64])


def preprocess(image: np.ndarray, spec: VisionSpec) -> np.ndarray:
    """uint8 [H, W, 3] -> normalized float32 [3, H, W] (clip.cpp: x / 255, minus mean, over std)."""
    x = image.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec.image_mean, np.float32)) / np.asarray(spec.image_std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def patch_grid(pixels: np.ndarray, spec: VisionSpec) -> tuple[np.ndarray, int, int]:
    """[3, H, W] -> patches [N, 3 * P * P] with the patches of each 2x2 merge unit adjacent (units in raster
    order), and the grid size (patches down, patches across)."""
    p, m = spec.patch_size, spec.spatial_merge_size
    c, height, width = pixels.shape
    gh, gw = height // p, width // p
    x = pixels.reshape(c, gh // m, m, p, gw // m, m, p)  # c, unit-row, mh, py, unit-col, mw, px
    x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # unit-row, unit-col, mh, mw, c, py, px
    return x.reshape(gh * gw, c * p * p), gh, gw


def positions(gh: int, gw: int, m: int) -> np.ndarray:
    """(row, col) of every patch, in patch_grid's order: [N, 2]."""
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    order = lambda a: a.reshape(gh // m, m, gw // m, m).transpose(0, 2, 1, 3).reshape(-1)  # noqa: E731
    return np.stack([order(rows), order(cols)], axis=-1)


def rope_tables(pos: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [N, D]: D/4 frequencies for the row and D/4 for the column, the pair repeated (rotate_half)."""
    quarter = head_dim // 4
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim // 2, 2, dtype=np.float64) / (head_dim // 2))
    angles = np.concatenate([np.outer(pos[:, 0], inv_freq), np.outer(pos[:, 1], inv_freq)], axis=-1)
    assert angles.shape[1] == 2 * quarter
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def window_groups(gh: int, gw: int, spec: VisionSpec) -> np.ndarray:
    """The window each patch belongs to: [N] labels. Windows are squares of window_size pixels, i.e.
    window_size / patch / merge units a side, tiled from the top left (the last ones may be smaller)."""
    m = spec.spatial_merge_size
    side = spec.window_size // spec.patch_size // m
    uh, uw = gh // m, gw // m
    ur, uc = np.meshgrid(np.arange(uh), np.arange(uw), indexing="ij")
    per_unit = (ur // side) * (-(-uw // side)) + (uc // side)  # window id of each merge unit, raster order
    return np.repeat(per_unit.reshape(-1), m * m)  # the m*m patches of a unit are adjacent


def grouped_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Bidirectional attention with GQA, each patch seeing the patches of its own group (all when None).
    q [N, nH, D], k/v [N, nKV, D] -> [N, nH * D]; query head h reads kv head h // (nH / nKV)."""
    n, n_heads, d = q.shape
    per_kv = n_heads // k.shape[1]
    visible = np.ones((n, n), bool) if groups is None else groups[:, None] == groups[None, :]
    out = np.empty((n, n_heads, d), np.float32)
    for h in range(n_heads):
        scores = (q[:, h] @ k[:, h // per_kv].T) * np.float32(1.0 / np.sqrt(d))
        scores = np.where(visible, scores, -np.inf)
        p = np.exp(scores - scores.max(axis=-1, keepdims=True))
        out[:, h] = (p / p.sum(axis=-1, keepdims=True)) @ v[:, h // per_kv]
    return out.reshape(n, n_heads * d)


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU of torch.nn.GELU()."""
    return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / np.sqrt(2.0)))).astype(np.float32)


def dense(get: Get, name: str, x: np.ndarray) -> np.ndarray:
    return x @ get(name + ".weight").T + get(name + ".bias")


def forward(get: Get, spec: VisionSpec, image: np.ndarray) -> np.ndarray:
    """Image embeddings of a uint8 [H, W, 3] image whose sides are multiples of 2 x patch_size:
    float32 [n_units, out_hidden], merge units in raster order (as libmtmd returns them)."""
    p, m = spec.patch_size, spec.spatial_merge_size
    if image.shape[0] % (p * m) or image.shape[1] % (p * m):
        raise ValueError(f"image sides {image.shape[:2]} must be multiples of {p * m}")
    nh, nkv, d, eps = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.eps

    patches, gh, gw = patch_grid(preprocess(image, spec), spec)
    kernel = get("v.patch_embd.weight") + get("v.patch_embd.weight.1")  # [hidden, 3, P, P], both frames equal
    x = patches @ kernel.reshape(kernel.shape[0], -1).T
    cos, sin = rope_tables(positions(gh, gw, m), d, spec.rope_theta)
    windows = window_groups(gh, gw, spec)

    for i in range(spec.depth):
        b = f"v.blk.{i}"
        qkv = dense(get, f"{b}.attn_qkv", rmsnorm(x, get(f"{b}.ln1.weight"), eps))
        q = qkv[:, : nh * d].reshape(-1, nh, d)
        k = qkv[:, nh * d : (nh + nkv) * d].reshape(-1, nkv, d)
        v = qkv[:, (nh + nkv) * d :].reshape(-1, nkv, d)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        groups = None if i in spec.fullatt_block_indexes else windows
        x = x + dense(get, f"{b}.attn_out", grouped_attention(q, k, v, groups))
        h = rmsnorm(x, get(f"{b}.ln2.weight"), eps)
        x = x + dense(get, f"{b}.ffn_down", silu(dense(get, f"{b}.ffn_gate", h)) * dense(get, f"{b}.ffn_up", h))

    y = rmsnorm(x, get("v.post_ln.weight"), eps).reshape(-1, m * m * spec.hidden_size)
    return dense(get, "mm.2", gelu(dense(get, "mm.0", y))).astype(np.float32)
