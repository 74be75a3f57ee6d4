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
name, so the plan is deterministic (and does not depend on threads: the kernels' bytes do not; the search below
keeps a plan only on a measured gain of more than MIN_GAIN, far above the forward's rounding).

With a probe (model.sensitivity), the damages are in KLD units (each tensor's relative error scaled by the
measured KLD of the tensor, or of a run of layers' tensors of one kind past PROBE_GROUPS tensors, quantized at
~4.5 bpw), and the additive model only proposes: whole plans are measured (every chosen tensor quantized at once,
the reference forward on the calibration tokens) and the lowest joint KLD is written. Candidates: the greedy
plan, the file type's own llama.cpp mixture brought within the budget, and a bounded local search from the
better one (see _refine). Why: the damage model adds per-tensor KLDs, but on models whose bytes sit in one or two
large tensors (tiny EXAONE 3.5: a tied 102400-row embedding) the choice is between a few coarse steps of those,
and there the model's error is as large as the difference it decides on (on the calibration tokens the greedy
plan there measured 0.054 against the fitted mixture's 0.052; the search from the mixture found 0.047, and the
file's mean KLD on the evaluation text is 0.84x Q4_K_M's with the same imatrix).
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize

from exaone_gguf.errors import InputError
from exaone_gguf.quantize.formats import SUPPORTED_TYPES, block_size, is_quantized, row_nbytes
from exaone_gguf.quantize.kernels import quantize
from exaone_gguf.quantize.mixtures import PlanKey

T = GGMLQuantizationType
SAMPLE_ROWS = 512
JOINT_EVALS = 24  # whole-plan measurements (reference forwards) after the greedy plan, at most
PATIENCE = 8  # the search stops after this many measured exchanges in a row that were not kept
MIN_GAIN = 0.01  # a search step is kept only when it lowers the measured KLD by more than this fraction
CACHE_BYTES = 2 << 30  # round trips kept for the search
PROBE_GROUPS = 64  # reference forwards that measure the tensors' sensitivities, at most about
# A measured-damage probe (model.sensitivity.KLDProbe): {GGUF name: the tensor's rows as a file would hold
# them} -> the mean KLD of the source's logits with those tensors replaced.
Probe = Callable[[Mapping[str, np.ndarray]], float]
MEASURE = "imatrix-weighted relative squared error in KLD units by probes; whole plans chosen by measured KLD"
# the candidate ladder: every block type we write, and F16 as the ceiling
CANDIDATES: tuple[T, ...] = tuple(sorted((t for t in SUPPORTED_TYPES if is_quantized(t)), key=int)) + (T.F16,)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """The size to reach: bits per weight over every tensor (as `inspect` counts them) or the whole file's bytes
    (header and vocabulary included)."""

    bpw: float | None = None
    size: int | None = None

    def budget(self, n_params: int) -> int:
        """Bytes allowed: tensor data for bpw, the whole file for size."""
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
                    f"--target-size {size!r}: write a size such as 700M or 1.5G (decimal units, the whole file)."
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


def measure_damage(t: TargetTensor, threads: int = 1) -> dict[T, float]:
    """{candidate type: damage} for one tensor, as its imatrix-weighted relative squared error (see the module's
    docstring); plan_target scales it into KLD units with the probes."""
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
    return out


def _full_round_trip(t: TargetTensor, q: T, threads: int) -> np.ndarray:
    """The whole tensor as a file of type q holds it (quantized and dequantized), rows in GGUF order."""
    n_rows = _n_rows(t.ne)
    n_mat = t.weights.size // t.ne[0] if t.weights is not None else 1
    every = np.arange(n_rows)
    x = np.ascontiguousarray(t.sample(every), dtype=np.float32).reshape(n_rows, t.ne[0])
    return _round_trip(x, every // (n_rows // n_mat), t.weights, q, threads)


_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def probe_groups(names: Sequence[str], n_groups: int = PROBE_GROUPS) -> list[list[str]]:
    """The tensors probed together: each alone while there are at most `n_groups` of them; otherwise each block
    tensor kind (attn_q.weight, ...) split into runs of consecutive layers, so that about `n_groups` forwards
    measure the whole model (the other tensors, token_embd and output, stay alone)."""
    if len(names) <= n_groups:
        return [[n] for n in sorted(names)]
    kinds: dict[str, list[tuple[int, str]]] = {}
    alone = []
    for n in sorted(names):
        m = _BLOCK.match(n)
        if m is None:
            alone.append([n])
        else:
            kinds.setdefault(m.group(2), []).append((int(m.group(1)), n))
    runs = max(1, (n_groups - len(alone)) // max(1, len(kinds)))
    groups = list(alone)
    for kind in sorted(kinds):
        members = [n for _, n in sorted(kinds[kind])]
        for part in np.array_split(np.arange(len(members)), min(runs, len(members))):
            groups.append([members[i] for i in part])
    return groups


def _probe_gains(
    tensors: Sequence[TargetTensor], dmg: dict[str, dict[T, float]], probe: Probe, threads: int
) -> dict[str, float]:
    """KLD per unit of relative error, per tensor: each group's tensors quantized at their probe types at once,
    the group's measured KLD divided by the sum of their relative errors at those types."""
    by_name = {t.name: t for t in tensors}
    gains = {}
    for group in probe_groups(list(by_name)):
        types = {n: probe_type(by_name[n].ne[0]) for n in group}
        rel = sum(dmg[n][types[n]] for n in group)
        kld = probe({n: _full_round_trip(by_name[n], types[n], threads) for n in group})
        for n in group:
            gains[n] = kld / rel if rel > 0 else 0.0
    return gains


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
    nbytes: int  # bytes of the plan: tensor data (and the header, for --target-size)
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
    probe: Probe | None = None,
    default: dict[str, T] | None = None,
    align: int = 1,
) -> TargetPlan:
    """Choose each tensor's type (see the module's docstring). `fixed_bytes`: the bytes of the tensors the plan
    does not choose (norms and other F32 tensors) and, for --target-size (a budget for the whole file), of the
    header; `align`: each tensor's bytes are counted rounded up to it (the file's alignment, for --target-size).
    `n_params`: every tensor's elements (for --target-bpw). `source`: the input's name for the error sentences."""
    budget = target.budget(n_params)

    def size(q: T, ne: Sequence[int]) -> int:
        return -(-row_nbytes(q, ne[0]) * _n_rows(ne) // align) * align

    low = fixed_bytes + sum(min(size(q, t.ne) for q in candidates(t.ne[0])) for t in tensors)
    f16 = fixed_bytes + sum(size(T.F16, t.ne) for t in tensors)
    what = "the whole file" if target.size is not None else "tensor data"

    def bpw(n: int) -> str:
        return f"{8 * n / n_params:.3f} bits per weight ({n / 1e6:.2f} MB of {what})"

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
    dmg = {t.name: measure_damage(t, threads) for t in tensors}
    if probe is not None:  # KLD units: each tensor's (or group's) measured KLD at the probe type
        gains = _probe_gains(tensors, dmg, probe, threads)
        dmg = {n: {q: d * gains[n] for q, d in dmg[n].items()} for n in dmg}
    nbytes = {t.name: {q: size(q, t.ne) for q in dmg[t.name]} for t in tensors}
    types = _greedy(dmg, nbytes, budget - fixed_bytes)
    if probe is not None:
        types = _refine(types, default, tensors, dmg, nbytes, budget - fixed_bytes, probe, threads)
    spent = fixed_bytes + sum(nbytes[n][q] for n, q in types.items())
    damage = sum(dmg[n][q] for n, q in types.items())
    return TargetPlan(types=types, budget=budget, nbytes=spent, damage=damage)


def _greedy(dmg: dict[str, dict[T, float]], nbytes: dict[str, dict[T, int]], budget: int) -> dict[str, T]:
    """Every tensor at its cheapest candidate, then the steps along each tensor's lower convex hull with the
    most damage saved per byte while they fit in `budget` (the bytes of the chosen tensors)."""
    ladders = {name: _hull([(nbytes[name][q], d, q) for q, d in dmg[name].items()]) for name in dmg}
    spent = sum(h[0][0] for h in ladders.values())
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
    return {name: ladders[name][level[name]][2] for name in ladders}


class _RoundTrips(Mapping):
    """A plan's tensors as the file will hold them (quantized and dequantized, GGUF rows), computed when the
    forward asks for them; round trips are cached per (tensor, type) up to CACHE_BYTES, so the plans a search
    measures share the work."""

    def __init__(self, tensors: dict[str, TargetTensor], threads: int) -> None:
        self.tensors, self.threads = tensors, threads
        self.cache: dict[tuple[str, T], np.ndarray] = {}
        self.cached = 0
        self.types: dict[str, T] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        key = (name, self.types[name])
        if key in self.cache:
            return self.cache[key]
        y = _full_round_trip(self.tensors[name], key[1], self.threads)
        if self.cached + y.nbytes <= CACHE_BYTES:
            self.cache[key] = y
            self.cached += y.nbytes
        return y

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def __iter__(self):
        return iter(self.types)

    def __len__(self) -> int:
        return len(self.types)


def _fit(types: dict[str, T], dmg, nbytes, budget: int) -> dict[str, T] | None:
    """`types` brought within `budget` by downgrades: the one adding the least damage among those that free
    enough, else the one adding the least damage per byte freed, and again (None when even the cheapest types
    of all do not fit)."""
    types = dict(types)
    while (need := sum(nbytes[n][q] for n, q in types.items()) - budget) > 0:
        enough, per_byte = None, None
        for n in sorted(types):
            cur = types[n]
            for q in sorted(nbytes[n], key=int):
                freed = nbytes[n][cur] - nbytes[n][q]
                if freed <= 0:
                    continue
                added = dmg[n][q] - dmg[n][cur]
                if freed >= need and (enough is None or added < enough[0]):
                    enough = (added, n, q)
                if per_byte is None or added / freed < per_byte[0]:
                    per_byte = (added / freed, n, q)
        pick = enough or per_byte
        if pick is None:
            return None
        types[pick[1]] = pick[2]
    return types


def _exchanges(types: dict[str, T], dmg, nbytes, budget: int) -> list[tuple[float, dict[str, T]]]:
    """Neighbouring plans within `budget`, the damage model's predicted change best first (whatever its sign: the
    model is what the measurement corrects). Two kinds: one tensor one step up (the next candidate
    with more bytes and less damage) paid for by downgrades of others (each to its type with the least damage
    added per byte freed), cheapest first; and one tensor one step down (the next candidate with fewer bytes)
    whose bytes pay for upgrades of others (each to its type with the most damage saved per byte), best first."""
    spent = sum(nbytes[n][q] for n, q in types.items())

    def step(n: str, up: bool, nearest: bool) -> T | None:
        """The next candidate up (more bytes, less damage) or down (fewer bytes); `nearest` False: the one with
        the best damage per byte instead (saved per byte added up, added per byte freed down)."""
        cur, b, d = types[n], nbytes[n], dmg[n]
        if up:
            options = [q for q in b if b[q] > b[cur] and d[q] < d[cur]]
            rank = (
                (lambda q: (b[q], d[q], int(q))) if nearest else (lambda q: ((d[q] - d[cur]) / (b[q] - b[cur]), int(q)))
            )
        else:
            options = [q for q in b if b[q] < b[cur]]
            rank = (
                (lambda q: (-b[q], d[q], int(q)))
                if nearest
                else (lambda q: ((d[q] - d[cur]) / (b[cur] - b[q]), int(q)))
            )
        return min(options, key=rank) if options else None

    # the tensor moved: one step; the others that pay or spend: the best damage per byte, any distance
    first_up = {n: q for n in types if (q := step(n, True, True)) is not None}
    first_down = {n: q for n in types if (q := step(n, False, True)) is not None}
    ups = {n: q for n in types if (q := step(n, True, False)) is not None}
    downs = {n: q for n in types if (q := step(n, False, False)) is not None}

    def change(n: str, q: T) -> tuple[int, float]:
        return nbytes[n][q] - nbytes[n][types[n]], dmg[n][q] - dmg[n][types[n]]

    # one-step downgrades, least damage per byte freed first; upgrades, most damage saved per byte first
    down_order = sorted(downs, key=lambda n: (change(n, downs[n])[1] / -change(n, downs[n])[0], n))
    up_order = sorted(ups, key=lambda n: (change(n, ups[n])[1] / change(n, ups[n])[0], n))
    out = []
    for n in sorted(types):
        for first, order, pool in ((first_up.get(n), down_order, downs), (first_down.get(n), up_order, ups)):
            if first is None:
                continue
            new = dict(types)
            new[n] = first
            room = budget - (spent + change(n, first)[0])
            for m in order:  # pay (room < 0) or spend (room > 0)
                if m == n:
                    continue
                b = change(m, pool[m])[0]
                if room < 0 and b < 0:
                    new[m] = pool[m]
                    room -= b
                    if room >= 0:
                        break
                elif room > 0 and 0 < b <= room:
                    new[m] = pool[m]
                    room -= b
            if room < 0:
                continue
            out.append((sum(dmg[k][new[k]] - dmg[k][types[k]] for k in new), new))
    out.sort(key=lambda p: p[0])
    return out


def _refine(
    greedy: dict[str, T],
    default: dict[str, T] | None,
    tensors: Sequence[TargetTensor],
    dmg,
    nbytes,
    budget: int,
    joint: Probe,
    threads: int,
) -> dict[str, T]:
    """The plan whose measured joint KLD (every chosen tensor quantized at once, the reference forward on the
    calibration tokens) is lowest among: the greedy plan, the file type's own mixture brought within the budget,
    and a local search from the better of them (exchanges the damage model ranks highest, each kept only when
    the measured KLD drops by more than MIN_GAIN; JOINT_EVALS measurements in all, PATIENCE misses in a row).
    The search runs when the model's float32 round trips fit in CACHE_BYTES (about 500M weights); a larger
    model keeps the better of the two starts, two measurements."""
    trips = _RoundTrips({t.name: t for t in tensors}, threads)

    def measure(types: dict[str, T]) -> float:
        trips.types = types
        return joint(trips)

    starts = [greedy]
    if default is not None:
        fitted = _fit({n: default[n] for n in greedy}, dmg, nbytes, budget)
        if fitted is not None and fitted != greedy:
            starts.append(fitted)
    scored = sorted(((measure(p), i, p) for i, p in enumerate(starts)), key=lambda s: (s[0], s[1]))
    score, _, best = scored[0]
    if sum(4 * int(np.prod(t.ne, dtype=np.int64)) for t in tensors) > CACHE_BYTES:
        # the round trips do not stay cached: every further measurement would quantize the whole model again
        # (a 1.2B model: about 20 s each on 2 threads), so larger models keep the better start
        return best
    evals = len(scored)
    tried: set[tuple] = set()
    # a local search from each start in turn, the better start first, each with its share of the measurements:
    # the starts are far apart (the greedy plan moves bytes between tensors the mixture never moves) and a search
    # from one stays near it
    for k, (start_score, _, plan) in enumerate(scored):
        share = evals + (JOINT_EVALS - evals) // (len(scored) - k)
        misses = 0
        while evals < share and misses < PATIENCE:
            moved = False
            for _, new in _exchanges(plan, dmg, nbytes, budget):
                key = tuple(sorted((n, int(q)) for n, q in new.items()))
                if key in tried:
                    continue
                tried.add(key)
                s = measure(new)
                evals += 1
                if s < start_score * (1 - MIN_GAIN):
                    start_score, plan, moved, misses = s, new, True, 0
                    break
                misses += 1
                if evals >= share or misses >= PATIENCE:
                    break
            if not moved:
                break
        if start_score < score:
            score, best = start_score, plan
    return best


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


def target_keys(target: Target, chosen: Sequence[T]) -> list[PlanKey]:
    """The keys a target file carries (after quantize.imatrix.*): (key, type, value, array element type).
    `chosen`: the plan, the type of each tensor the target chose, in the file's tensor order (the tensors the
    file type's mixture quantizes); ggml type ids, so that the header's size does not depend on the choice (a
    --target-size budget counts it)."""
    V = GGUFValueType
    claim = ("bpw", V.FLOAT32, float(target.bpw)) if target.bpw is not None else ("size", V.UINT64, int(target.size))
    return [
        ("quantize.target." + claim[0], claim[1], claim[2], None),
        ("quantize.target.measure", V.STRING, MEASURE, None),
        ("quantize.target.types", V.ARRAY, [int(q) for q in chosen], V.UINT32),
    ]


def read_target(get: Callable[[str], object]) -> tuple[Target, list[T] | None] | None:
    """(the target a file claims, its recorded plan or None) from its quantize.target.* keys (`get`: key -> value
    or None); None when it claims none. ValueError for a recorded type that is not a ggml type."""
    bpw, size = get("quantize.target.bpw"), get("quantize.target.size")
    if bpw is None and size is None:
        return None
    target = Target(bpw=float(bpw)) if bpw is not None else Target(size=int(size))
    types = get("quantize.target.types")
    return target, [T(int(q)) for q in types] if types is not None else None


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
