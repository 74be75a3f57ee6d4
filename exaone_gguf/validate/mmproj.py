"""validate for a vision projector file (clip, projector type exaone4_5): metadata against the source, every
tensor against a fresh conversion of the source, and the image embeddings llama.cpp's multimodal library
(libmtmd) computes for a built-in test image against the numpy reference of the vision tower.

Limits on the embedding comparison (libmtmd on the file vs the reference on the source weights, the built-in
224 x 336 test image, measured on the tiny EXAONE 4.5 of tests/vision_checkpoint.py): F32 1-cos 1.2e-7, max
relative error 5.3e-4 (ggml's GELU is the tanh approximation, the source's the exact erf); F16 2.5e-7 / 7.0e-4;
BF16 9.5e-6 / 4.5e-3; Q8_0 1.1e-4 / 1.5e-2 (8-bit weights, and activations rounded to Q8_0 before each
product). The limits sit about four times above. A file that runs the windows, the rotary positions or the patch kernel wrongly is
off by 1-cos of 1e-2 or more.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from gguf import GGUFValueType

from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.gguf_io.writer import GGUFPlan
from exaone_gguf.model.forwards import exaone4_5_vision
from exaone_gguf.model.weights import FileWeights, dequantize
from exaone_gguf.runtime.mtmd import mtmd_generate, mtmd_image_embeddings, write_standin_text_model
from exaone_gguf.validate.metadata_check import file_type_name
from exaone_gguf.validate.report import Report
from exaone_gguf.validate.results import CheckResult
from exaone_gguf.vision import PROJECTOR_TYPE, source_weights
from exaone_gguf.vision.mmproj import N_WA_PATTERN_KEY, OUTTYPES, add_vision_keys, plan_mmproj

# file type -> (max 1 - cosine, max relative error) of libmtmd's embedding against the source's reference
EMBEDDING_LIMITS = {
    "F32": (5e-7, 2e-3),
    "F16": (1e-6, 3e-3),
    "BF16": (4e-5, 2e-2),
    "Q8_0": (5e-4, 6e-2),
}
PROJECTOR_KEY = "clip.projector_type"
TEST_IMAGE_SIZE = (224, 336)  # height, width: multiples of 28, 2 x 3 windows of 112 pixels, not resized by clip
# smaller images for projectors whose max_pixels is below 224 x 336 (clip would resize the test image)
_IMAGE_SIZES = (TEST_IMAGE_SIZE, (224, 224), (112, 168), (112, 112), (56, 56))


def image_size_for(spec) -> tuple[int, int]:
    """The largest built-in test image size clip's smart resize keeps as it is for this projector."""
    for h, w in _IMAGE_SIZES:
        if spec.min_pixels <= h * w <= spec.max_pixels:
            return h, w
    raise InputError(
        f"min/max pixels {spec.min_pixels}/{spec.max_pixels}: no built-in test image fits; the projector's "
        "preprocessor_config.json allows no image between 56x56 and 224x336."
    )


def is_mmproj(path: Path | str) -> bool:
    f = read_gguf(path)
    try:
        return f.get("general.architecture") == "clip"
    finally:
        f.close()


def builtin_image(height: int = TEST_IMAGE_SIZE[0], width: int = TEST_IMAGE_SIZE[1]) -> np.ndarray:
    """A deterministic RGB test pattern (gradients, stripes and a checkerboard), uint8 [H, W, 3]."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(1, width - 1)).astype(np.int64)
    g = ((y * 7 + x * 3) % 256).astype(np.int64)
    b = np.where(((x // 16) + (y // 16)) % 2 == 0, 40, 215) + (x * y) % 31
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def embedding_metrics(got: np.ndarray, want: np.ndarray) -> dict:
    got, want = got.astype(np.float64), want.astype(np.float64)
    cos = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    return {
        "cosine": cos,
        "one_minus_cosine": 1.0 - cos,
        "max_rel_error": float(np.abs(got - want).max() / np.abs(want).max()),
        "n_tokens": int(want.shape[0]),
    }


def _value(v):
    return v.tolist() if hasattr(v, "tolist") else v


def _same(a, b, vtype) -> bool:
    if vtype == GGUFValueType.FLOAT32:
        return np.float32(a) == np.float32(b)
    if vtype == GGUFValueType.ARRAY:
        return np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    return a == b


def check_projector_type(f) -> CheckResult:
    arch, ptype = f.get("general.architecture"), f.get(PROJECTOR_KEY)
    if arch == "clip" and ptype == PROJECTOR_TYPE:
        return CheckResult("projector type", "pass", f"clip, {PROJECTOR_TYPE}")
    return CheckResult(
        "projector type",
        "fail",
        f"architecture {arch!r}, projector type {ptype!r}; EXAONE 4.5 needs clip / {PROJECTOR_TYPE} "
        "(llama.cpp would build another graph)",
    )


def check_keys(f, expected: GGUFPlan) -> list[CheckResult]:
    """n_wa_pattern on its own (llama.cpp's window layout), then every other clip key the converter writes."""
    out = []
    want_wa = expected.kv[N_WA_PATTERN_KEY][1]
    got_wa = f.get(N_WA_PATTERN_KEY)
    out.append(
        CheckResult("window pattern", "pass", f"n_wa_pattern {got_wa}")
        if got_wa == want_wa
        else CheckResult(
            "window pattern",
            "fail",
            f"n_wa_pattern is {got_wa}, the source's fullatt_block_indexes give {want_wa}: "
            "llama.cpp would attend globally in the wrong blocks",
        )
    )
    bad = []
    for key, (vtype, value, _) in expected.kv.items():
        if key in (N_WA_PATTERN_KEY, PROJECTOR_KEY) or not key.startswith("clip."):
            continue
        if key not in f.metadata:
            bad.append(f"{key} missing")
        elif not _same(_value(f.metadata[key]), value, vtype):
            bad.append(f"{key} {_value(f.metadata[key])!r} != {value!r}")
    out.append(
        CheckResult("vision hyperparameters", "fail", "; ".join(bad))
        if bad
        else CheckResult("vision hyperparameters", "pass", "every clip.vision key equals the source's")
    )
    return out


def check_tensor_values(f, plan: GGUFPlan) -> list[CheckResult]:
    """Names, shapes and types as the converter plans them; the two patch-kernel halves against the source's
    temporal slices; every other tensor identical to a fresh conversion of the source (our bytes are
    llama.cpp's converter's)."""
    planned = {t.name: t for t in plan.tensors}
    have = {t.name: t for t in f.tensors}
    layout = [
        f"{n}: {'missing' if n not in have else f'{have[n].type_name} {list(have[n].shape)}'} "
        f"(expected {t.qtype.name} {list(t.shape)})"
        for n, t in planned.items()
        if n not in have or have[n].shape != t.shape or have[n].tensor_type != t.qtype
    ] + [f"{n}: not part of the projector" for n in have if n not in planned]
    if layout:
        return [CheckResult("tensors", "fail", "; ".join(layout[:4]) + (" ..." if len(layout) > 4 else ""))]
    results = [CheckResult("tensors", "pass", f"{len(planned)} tensors, names, shapes and types as planned")]

    def fresh(name: str) -> bytes:
        return b"".join(np.asarray(c).reshape(-1).view(np.uint8).tobytes() for c in planned[name].produce())

    patch = [n for n in planned if n.startswith("v.patch_embd.")]
    file_w = FileWeights(f)
    src = {n: np.frombuffer(fresh(n), np.uint8) for n in patch}

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    deq = {
        n: dequantize(src[n], planned[n].qtype, int(np.prod(planned[n].shape[1:])), planned[n].shape[0]) for n in patch
    }
    got = {n: file_w.get(n).reshape(deq[n].shape) for n in patch}
    errs = {(a, b): rel(got[a], deq[b]) for a in patch for b in patch}
    straight = max(errs[(n, n)] for n in patch)
    if straight <= 1e-6:
        results.append(CheckResult("patch embedding", "pass", "both temporal halves equal the source's conv3d slices"))
    else:
        crossed = len(patch) == 2 and max(errs[(patch[0], patch[1])], errs[(patch[1], patch[0])]) <= 1e-6
        results.append(
            CheckResult(
                "patch embedding",
                "fail",
                ("the two temporal halves are swapped" if crossed else f"relative error {straight:.3g}")
                + " against the source's conv3d kernel (v.patch_embd.weight = slice 0, .weight.1 = slice 1)",
            )
        )
    differ = [n for n in planned if n not in patch and bytes(f.tensor_bytes(have[n])) != fresh(n)]
    results.append(
        CheckResult("tensor values", "fail", f"{len(differ)} tensor(s) differ from the source: {', '.join(differ[:4])}")
        if differ
        else CheckResult(
            "tensor values",
            "pass",
            f"{len(planned) - len(patch)} tensors identical to a fresh conversion of the source",
        )
    )
    return results


def check_embedding(mmproj: Path, text_model: Path, get_source, spec, file_type: str, threads: int) -> CheckResult:
    image = builtin_image(*image_size_for(spec))
    got = mtmd_image_embeddings(mmproj, text_model, image, threads)
    want = exaone4_5_vision.forward(get_source, spec, image)
    if got.shape != want.shape:
        return CheckResult(
            "image embedding", "fail", f"libmtmd gave {list(got.shape)}, the reference {list(want.shape)}"
        )
    m = embedding_metrics(got, want)
    max_1mcos, max_rel = EMBEDDING_LIMITS.get(file_type, EMBEDDING_LIMITS["Q8_0"])
    m.update(limit_one_minus_cosine=max_1mcos, limit_max_rel_error=max_rel, image=list(image.shape))
    ok = m["one_minus_cosine"] <= max_1mcos and m["max_rel_error"] <= max_rel
    detail = (
        f"libmtmd vs numpy reference, {m['n_tokens']} tokens: cosine {m['cosine']:.8f} (1-cos limit {max_1mcos:g}), "
        f"max relative error {m['max_rel_error']:.3g} (limit {max_rel:g})"
    )
    return CheckResult("image embedding", "pass" if ok else "fail", detail, m)


def check_generation(mmproj: Path, text_model: Path, threads: int, n_tokens: int = 4) -> CheckResult:
    tokens, logits_ok = mtmd_generate(mmproj, text_model, builtin_image(), "Describe the image.", n_tokens, threads)
    if len(tokens) == n_tokens and logits_ok:
        return CheckResult(
            "multimodal generation", "pass", f"{n_tokens} tokens after the image through llama.cpp", {"tokens": tokens}
        )
    return CheckResult(
        "multimodal generation", "fail", f"{len(tokens)} of {n_tokens} tokens, finite logits {logits_ok}"
    )


def validate_mmproj(
    model: Path | str,
    reference: Path | str | None = None,
    text_model: Path | str | None = None,
    threads: int = 1,
    generate: bool = False,
) -> Report:
    """The projector file `model` against the source checkpoint `reference`; libmtmd runs it with `text_model`
    (or a stand-in of the right hidden size). `generate`: a few tokens through the text model after the image."""
    start = time.perf_counter()
    model = Path(model)
    f = read_gguf(model)
    try:
        ft = file_type_name(f.get("general.file_type"))
        report = Report(str(model), str(reference) if reference else None, ft, "cpu", threads=threads)
        checks = report.checks
        checks.append(check_projector_type(f))
        outtype = {v: k for k, v in OUTTYPES.items()}.get(f.get("general.file_type"))
        spec = get = None
        if reference is not None:
            if outtype is None:
                raise InputError(f"{model}: general.file_type {ft} is not a projector type (f32, f16, bf16, q8_0).")
            plan, spec, _ = plan_mmproj(reference, outtype)
            expected = GGUFPlan()
            add_vision_keys(expected, spec, outtype, 0)
            checks += check_keys(f, expected)
            checks += check_tensor_values(f, plan)
            spec, get = source_weights(reference)
    finally:
        f.close()
    runnable = checks[0].status == "pass"
    with tempfile.TemporaryDirectory(prefix="exaone-gguf-mmproj-") as tmp:
        text = Path(text_model) if text_model else None
        if runnable and spec is not None:
            text = text or write_standin_text_model(Path(tmp) / "standin.gguf", spec.projection_dim)
            checks.append(check_embedding(model, text, get, spec, ft, threads))
        elif spec is None:
            checks.append(CheckResult("image embedding", "skip", "needs --reference SRC (the source checkpoint)"))
        else:
            checks.append(CheckResult("image embedding", "skip", "the projector type is not exaone4_5"))
        if generate and text_model is not None:
            checks.append(
                check_generation(model, Path(text_model), threads)
                if runnable
                else CheckResult("multimodal generation", "skip", "the projector type is not exaone4_5")
            )
    report.seconds = time.perf_counter() - start
    return report
