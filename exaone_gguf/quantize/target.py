"""`--target-bpw B` / `--target-size SIZE`: each tensor's type chosen to reach a size with the least damage.

Damage of a tensor at a type: the importance-weighted squared quantization error
D = sum_ij w_j (W_ij - Q(W)_ij)^2 with w_j = in_sum2_j / count (the imatrix's E[x_j^2]): for a product y = W x
this is E |y - Q(W) x|^2 when the inputs' columns are uncorrelated, the squared error the product adds to the
activations per token, and it is what llama.cpp's imatrix-aware kernels minimize block by block. A tensor the
imatrix does not cover (an untied token_embd: a lookup, not a product) counts its mean squared row error
sum_ij (W_ij - Q(W)_ij)^2 / n_rows, the error a uniformly drawn token's embedding carries (a tied token_embd,
also the output product, counts both). Q is the very quantization the file gets (llama.cpp's kernels with the
same imatrix), measured on up to SAMPLE_ROWS evenly spaced rows and scaled to the whole tensor.

The plan: every quantizable tensor starts at its cheapest candidate type (all block types this package writes
whose block divides the row, llama.cpp's row constraint, and F16); then, greedily, the step with the most
damage saved per byte added (along each tensor's lower convex hull of (bytes, damage)) is taken while it fits
in the budget; steps that no longer fit are skipped and smaller ones still fill the rest. Ties break by tensor
name, so the plan is deterministic (and does not depend on threads: the kernels' bytes do not).
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from exaone_gguf.errors import InputError
from exaone_gguf.quantize.formats import SUPPORTED_TYPES, block_size, is_quantized, row_nbytes
from exaone_gguf.quantize.kernels import quantize

T = GGMLQuantizationType
SAMPLE_ROWS = 512
MEASURE = "imatrix-weighted relative squared error, in KLD units by a per-tensor probe"
# the candidate ladder: every block type we write, and F16 as the ceiling
CANDIDATES: tuple[T, ...] = tuple(sorted((t for t in SUPPORTED_TYPES if is_quantized(t)), key=int)) + (T.F16,)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """The size to reach: bits per weight over every tensor (as `inspect` counts them) or tensor-data bytes."""

    bpw: float | None = None
    size: int | None = None

    def budget(self, n_params: int) -> int:
        """Tensor-data bytes allowed."""
        return int(self.size) if self.size is not None else int(self.bpw * n_params / 8)

    def describe(self) -> str:
        return f"--target-bpw {self.bpw:g}" if self.bpw is not None else f"--target-size {self.size}"

    def to_dict(self) -> dict:
        return {"bpw": self.bpw, "size": self.size, "measure": MEASURE}


def parse_target(bpw: float | None, size: str | int | None) -> Target | None:
    """--target-bpw / --target-size -> Target (None when neither is given); InputError for a bad value."""
    if bpw is not None and size is not None:
        raise InputError("--target-bpw and --target-size: give one of them, not both.")
    if bpw is not None:
        if not np.isfinite(bpw) or bpw <= 0:
            raise InputError(f"--target-bpw {bpw}: give a positive number of bits per weight, e.g. 4.8.")
        return Target(bpw=float(bpw))
    if size is not None:
        if isinstance(size, int):
            n = size
        else:
            m = _SIZE.match(str(size))
            if m is None:
                raise InputError(
                    f"--target-size {size!r}: write a size such as 700M or 1.5G (decimal units, tensor data)."
                )
            n = int(float(m.group(1)) * 1000 ** "_KMGT".index((m.group(2) or "_").upper()))
        if n <= 0:
            raise InputError(f"--target-size {size!r}: give a positive size, e.g. 700M.")
        return Target(size=n)
    return None


@dataclass(frozen=True)
class TargetTensor:
    """One tensor the plan may choose a type for: `ne` (GGUF order), `sample(rows)` -> float32 [len(rows), ne[0]]
    (the rows of the tensor in GGUF order, ne[0] values each), `weights` the imatrix entry (ne[0] * n_expert
    values) or None, `lookup` True for a token embedding (its rows are looked up, not multiplied)."""

    name: str
    ne: tuple[int, ...]
    sample: Callable[[np.ndarray], np.ndarray]
    weights: np.ndarray | None
    lookup: bool


def sample_rows(n_rows: int, k: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to k evenly spaced row indices (all rows when there are fewer)."""
    if n_rows <= k:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, k).round().astype(np.int64))


def _n_rows(ne: Sequence[int]) -> int:
    return int(np.prod(ne[1:], dtype=np.int64)) if len(ne) > 1 else 1


def candidates(ncols: int) -> list[T]:
    return [t for t in CANDIDATES if ncols % block_size(t) == 0]


def _round_trip(x: np.ndarray, expert: np.ndarray, weights: np.ndarray | None, q: T, threads: int) -> np.ndarray:
    """x quantized to q (each expert's rows with its own imatrix weights) and dequantized."""
    ncols = x.shape[1]
    y = np.empty_like(x)
    for e in np.unique(expert):
        sel = expert == e
        if q == T.F16:
            y[sel] = x[sel].astype(np.float16).astype(np.float32)
            continue
        imx = weights[e * ncols : (e + 1) * ncols] if weights is not None else None
        y[sel] = dequantize(quantize(x[sel], q, imatrix=imx, threads=threads), q).reshape(-1, ncols)
    return y


def probe_type(ncols: int) -> T:
    """The type a tensor's KLD is probed at: the candidate nearest 4.5 bits per weight (Q4_K where it fits)."""
    return min(candidates(ncols), key=lambda q: (abs(8 * row_nbytes(q, ncols) / ncols - 4.5), int(q)))


def measure_damage(
    t: TargetTensor, threads: int = 1, probe: Callable[[str, np.ndarray], float] | None = None
) -> dict[T, float]:
    """{candidate type: damage} for one tensor (see the module's docstring)."""
    ncols = t.ne[0]
    n_rows = _n_rows(t.ne)
    n_mat = t.weights.size // ncols if t.weights is not None else 1
    rows = sample_rows(n_rows)
    x = np.ascontiguousarray(t.sample(rows), dtype=np.float32).reshape(len(rows), ncols)
    expert = rows // (n_rows // n_mat)  # a 3-D expert tensor: each expert's rows have their own weights
    w = t.weights.reshape(n_mat, ncols).astype(np.float64)[expert] if t.weights is not None else None
    x64 = x.astype(np.float64)
    # the product's output power (and a lookup's row power): damage is relative to the signal it disturbs
    signal_product = float((x64**2 * w).sum()) if w is not None else 0.0
    signal_lookup = float((x64**2).sum()) if (t.lookup or w is None) else 0.0
    out = {}
    for q in candidates(ncols):
        err = (x64 - _round_trip(x, expert, t.weights, q, threads)) ** 2
        d = float((err * w).sum()) / signal_product if signal_product > 0 else 0.0
        if signal_lookup > 0:
            d += float(err.sum()) / signal_lookup
        out[q] = d
    if probe is not None:  # KLD units: the tensor alone at the probe type, through the reference forward
        q = probe_type(ncols)
        every = np.arange(n_rows)
        full = np.ascontiguousarray(t.sample(every), dtype=np.float32).reshape(n_rows, ncols)
        kld = probe(t.name, _round_trip(full, every // (n_rows // n_mat), t.weights, q, threads))
        gain = kld / out[q] if out[q] > 0 else 0.0
        out = {k: v * gain for k, v in out.items()}
    return out


def _hull(points: list[tuple[int, float, T]]) -> list[tuple[int, float, T]]:
    """The lower convex hull of (bytes, damage) from the cheapest point, keeping only steps that lower damage."""
    pts = sorted(points, key=lambda p: (p[0], p[1]))
    best: list[tuple[int, float, T]] = []
    for p in pts:  # drop dominated points: more bytes, no less damage
        if not best or p[1] < best[-1][1]:
            if best and p[0] == best[-1][0]:
                best[-1] = p
            else:
                best.append(p)
    hull: list[tuple[int, float, T]] = []
    for p in best:
        while len(hull) >= 2:
            (b0, d0, _), (b1, d1, _) = hull[-2], hull[-1]
            # the middle point is above the chord: the step through it saves less per byte than going past it
            if (d0 - d1) * (p[0] - b0) <= (d0 - p[1]) * (b1 - b0):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


@dataclass
class TargetPlan:
    types: dict[str, T]
    budget: int
    nbytes: int  # tensor data bytes of the plan
    damage: float

    def summary(self) -> dict[str, int]:
        """{type name: tensor count} of the chosen types."""
        out: dict[str, int] = {}
        for q in self.types.values():
            out[q.name] = out.get(q.name, 0) + 1
        return dict(sorted(out.items()))


def plan_target(
    target: Target,
    tensors: Sequence[TargetTensor],
    fixed_bytes: int,
    n_params: int,
    source: str,
    threads: int = 1,
    probe: Callable[[str, np.ndarray], float] | None = None,
) -> TargetPlan:
    """Choose each tensor's type (see the module's docstring). `fixed_bytes`: the bytes of the tensors the plan
    does not choose (norms and other F32 tensors); `n_params`: every tensor's elements (for --target-bpw).
    `source`: the input's name for the error sentences."""
    budget = target.budget(n_params)
    sizes = {t.name: sorted(row_nbytes(q, t.ne[0]) * _n_rows(t.ne) for q in candidates(t.ne[0])) for t in tensors}
    low = fixed_bytes + sum(s[0] for s in sizes.values())
    f16 = fixed_bytes + sum(row_nbytes(T.F16, t.ne[0]) * _n_rows(t.ne) for t in tensors)

    def bpw(n: int) -> str:
        return f"{8 * n / n_params:.3f} bits per weight ({n / 1e6:.2f} MB of tensor data)"

    if budget < low:  # refused before any measurement
        raise InputError(
            f"{source}: {target.describe()} asks for {bpw(budget)}, below the smallest file this model can be "
            f"written as, {bpw(low)}; give a larger target."
        )
    if budget > f16:
        raise InputError(
            f"{source}: {target.describe()} asks for {bpw(budget)}, above the F16 file, {bpw(f16)}; give a smaller "
            "target or use --outtype f16."
        )
    ladders = {}
    for t in tensors:
        dmg = measure_damage(t, threads, probe)
        ladders[t.name] = _hull([(row_nbytes(q, t.ne[0]) * _n_rows(t.ne), d, q) for q, d in dmg.items()])
    spent = fixed_bytes + sum(h[0][0] for h in ladders.values())
    level = {name: 0 for name in ladders}
    heap: list[tuple[float, str]] = []

    def push(name: str) -> None:
        h, i = ladders[name], level[name]
        if i + 1 < len(h):
            (b0, d0, _), (b1, d1, _) = h[i], h[i + 1]
            heapq.heappush(heap, (-(d0 - d1) / (b1 - b0), name))

    for name in sorted(ladders):
        push(name)
    while heap:
        _, name = heapq.heappop(heap)
        h, i = ladders[name], level[name]
        step = h[i + 1][0] - h[i][0]
        if spent + step > budget:
            continue  # does not fit; smaller steps of other tensors may
        spent += step
        level[name] = i + 1
        push(name)
    types = {name: ladders[name][level[name]][2] for name in ladders}
    damage = sum(ladders[name][level[name]][1] for name in ladders)
    return TargetPlan(types=types, budget=budget, nbytes=spent, damage=damage)


def split_outtype(token: str) -> tuple[str, Target | None]:
    """An --outtype item: 'q4_k_m' -> ('q4_k_m', None); 'q4_k_m@4.6' (a target-bpw variant labelled q4_k_m)
    -> ('q4_k_m', Target(bpw=4.6)); InputError for a bad number."""
    name, sep, bits = token.partition("@")
    if not sep:
        return token, None
    try:
        value = float(bits)
    except ValueError:
        raise InputError(f"--outtype {token}: write TYPE@BITS, e.g. q4_k_m@4.6 (a --target-bpw variant).") from None
    return name, parse_target(value, None)


def variant_label(outtype: str, target: Target | None) -> str:
    """The name a target variant goes by in a release ('q4_k_m-4.6bpw'): files, Modelfiles, the card."""
    return outtype if target is None or target.bpw is None else f"{outtype}-{target.bpw:g}bpw"


def target_keys(target: Target) -> list[tuple[str, str, object]]:
    """The keys a target file carries (after quantize.imatrix.*): (key, kind, value), kind 'f32' / 'u64' / 'str'.
    The plan itself is the file's tensor table (each tensor's type)."""
    keys: list[tuple[str, str, object]] = []
    if target.bpw is not None:
        keys.append(("quantize.target.bpw", "f32", float(target.bpw)))
    else:
        keys.append(("quantize.target.size", "u64", int(target.size)))
    keys.append(("quantize.target.measure", "str", MEASURE))
    return keys


def check_target_use(target: Target | None, ftype: str, has_imatrix: bool, overrides: object) -> None:
    """The option combinations a target run refuses (one sentence each)."""
    if target is None:
        return
    if not is_quantized(_default_type(ftype)):
        raise InputError(
            f"{target.describe()} chooses among quantized types; give a quantized type (e.g. q4_k_m) as the file "
            f"type, not {ftype}."
        )
    if not has_imatrix:
        raise InputError(
            f"{target.describe()} measures each tensor's damage with an importance matrix; pass --imatrix FILE "
            "(make one with `exaone-gguf imatrix SRC_DIR -o imatrix.gguf`)."
        )
    if overrides:
        raise InputError(
            f"{target.describe()} chooses every tensor's type; drop --tensor-type / --output-tensor-type / "
            "--token-embedding-type / --pure / --leave-output-tensor, or the target."
        )


def _default_type(ftype: str) -> T:
    from exaone_gguf.quantize.formats import file_type

    return file_type(ftype).default_type
