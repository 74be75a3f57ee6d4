"""Measured sensitivity for --target-bpw / --target-size: the mean KLD of the source's logits when one tensor
alone carries a quantization error (the reference forward with that tensor replaced, every other in float32).

quantize.target turns it into one gain per tensor (KLD per unit of its imatrix-weighted relative error), so
the damages the plan trades against bytes are in KLD units: a tensor's importance for the output is measured,
not assumed (the importance-weighted error alone treats a product's error the same wherever it sits; on the
trained model it put the last ffn_down at Q2_K and lost to Q4_K_M by 4x).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.families import family_for
from exaone_gguf.model import forward_weights
from exaone_gguf.model.imatrix import tokenize
from exaone_gguf.model.ops import log_softmax
from exaone_gguf.model.texts import checkpoint_calibration_text
from exaone_gguf.model.weights import SourceWeights

PROBE_TOKENS = 128


class _Replaced:
    """`base` with the tensors in `values` (GGUF name -> rows in GGUF order, read when the forward asks)
    replaced, reshaped to the source's shapes."""

    def __init__(self, base: SourceWeights, values: Mapping[str, np.ndarray], shapes: dict[str, tuple]) -> None:
        self.base, self.values, self.shapes = base, values, shapes

    def __contains__(self, name: str) -> bool:
        return name in self.base

    def get(self, name: str) -> np.ndarray:
        if name in self.values:
            return np.ascontiguousarray(self.values[name], dtype=np.float32).reshape(self.shapes[name])
        return self.base.get(name)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        if name in self.values:
            value = self.get(name)
            return value.reshape(value.shape[0], -1)[start:stop]
        return self.base.rows(name, start, stop)

    def n_rows(self, name: str) -> int:
        return self.base.n_rows(name)

    def product_input(self, name: str, x: np.ndarray) -> np.ndarray:
        return x


def mean_kld(ref_logp: np.ndarray, ref_p: np.ndarray, test: np.ndarray) -> float:
    """Mean KLD(ref || test) over the rows that predict a next token (the reference's log-softmax given)."""
    b = log_softmax(test[:-1])
    return float(np.maximum((ref_p * (ref_logp - b)).sum(axis=-1), 0.0).mean())


class KLDProbe:
    """probe({gguf_name: rows, ...}) -> mean KLD over the first `n_tokens` of the built-in calibration text (the
    imatrix's; the evaluation text stays out of the plan), those tensors replaced at once by their rows (GGUF row
    order, [n_rows, ne0]; reshaped to the source's shapes): one tensor's or a group's sensitivity, or a whole
    plan's measured damage (quantize.target.Probe)."""

    def __init__(self, ckpt: Checkpoint, arch: str | None = None, n_tokens: int = PROBE_TOKENS) -> None:
        spec = ckpt.spec
        self.fam = family_for(spec, arch)
        self.spec = spec
        self.mappings = {m.gguf_name: m for m in self.fam.tensor_map(spec)}
        self.base = SourceWeights(ckpt, list(self.mappings.values()))
        self.tokens = tokenize(ckpt, checkpoint_calibration_text(ckpt.tokenizer))[0][:n_tokens]
        self.ref_logp = log_softmax(forward_weights(self.fam, self.base, spec, self.tokens)[:-1])
        self.ref_p = np.exp(self.ref_logp)

    def __call__(self, replaced: Mapping[str, np.ndarray]) -> float:
        shapes = {name: self.mappings[name].hf_shape for name in replaced}
        logits = forward_weights(self.fam, _Replaced(self.base, replaced, shapes), self.spec, self.tokens)
        return mean_kld(self.ref_logp, self.ref_p, logits)


def kld_probe(ckpt: Checkpoint, arch: str | None = None, n_tokens: int = PROBE_TOKENS) -> KLDProbe:
    """The measured-sensitivity probe a target plan uses (see KLDProbe)."""
    return KLDProbe(ckpt, arch, n_tokens)
