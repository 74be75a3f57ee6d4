"""validate: prove a GGUF matches its source — metadata, tokenizer, chat template, tensors and logits.

With a source checkpoint: tensors (every row of each tensor against a fresh quantization of its source rows,
tensor_check.py); source (the source's own numpy forward against llama.cpp on our float conversion of it, or on
the file itself when it is a float file: the converter computes the source's network); metadata against that
conversion (a quantized file: llama.cpp builds the same graph from it); fidelity (llama.cpp on the file against
llama.cpp on the conversion: the quality report, KLD, top-1, perplexity, fidelity.py). Structure (the numpy
forward on the file's own weights against llama.cpp on the file) runs for 16-bit files of another precision's
source, and for quantized files on request (`structure=True`: a check of ggml's quantized kernels, one more
forward).

`validate(model, reference)` runs every check and returns a Report; a failed check is a result, not an
exception. Bad input (unreadable files, bad options) raises InputError.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
import time
from pathlib import Path

import numpy as np

from exaone_gguf.cores import resolve_threads
from exaone_gguf.errors import InputError
from exaone_gguf.families import load_checkpoint, without_mtp, writes_as
from exaone_gguf.gguf_io.split import open_model
from exaone_gguf.model.texts import load_text
from exaone_gguf.quantize.imatrix import load_imatrix
from exaone_gguf.runtime.logits import Runner, check_device, trim_heap
from exaone_gguf.runtime.routes import llama_routes
from exaone_gguf.validate.metadata_check import check_against_conversion, check_metadata, file_type_name, nextn_blocks
from exaone_gguf.validate.metrics import (
    NOISE_FLOOR_FACTOR,
    Thresholds,
    compare_logits,
    floor_capped,
    grade,
    judge_structure,
    limit_over_floor,
    rounds_activations,
    structure_limit,
    thresholds_for,
)
from exaone_gguf.validate.report import Report
from exaone_gguf.validate.results import CheckResult
from exaone_gguf.validate.routing import check_routing
from exaone_gguf.validate.template_check import check_templates
from exaone_gguf.validate.tensor_check import check_tensors
from exaone_gguf.validate.tokenizer_check import (
    check_chat_tokens,
    check_round_trip,
    compare_tokenization,
    file_chat_vocab,
    source_chat_vocab,
)

__all__ = ["validate", "Report", "CheckResult"]

DEFAULT_MAX_TOKENS = 256


def override_thresholds(base: Thresholds, overrides: dict[str, float] | None) -> Thresholds:
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(Thresholds)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise InputError(f"--threshold {unknown[0]}: unknown threshold; choose from {', '.join(sorted(fields))}.")
    return dataclasses.replace(base, **overrides)


def check_chat_stop(runner: Runner, eos: int | None) -> CheckResult:
    """create_chat_completion must stop on EOS: force EOS with a logit bias and see generation end there."""
    name = "chat: completion stops on EOS"
    if eos is None:
        return CheckResult(name, "fail", "the file has no EOS token")
    try:
        out = runner.llm.create_chat_completion(
            messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0, logit_bias={eos: 100.0}
        )
    except Exception as e:  # a template llama-cpp-python cannot render is reported by the template checks
        return CheckResult(name, "fail", f"create_chat_completion raised {type(e).__name__}: {str(e)[:120]}")
    choice = out["choices"][0]
    content = choice["message"].get("content") or ""
    if choice["finish_reason"] != "stop" or content:
        return CheckResult(
            name,
            "fail",
            f"generation went on after EOS {eos} (finish_reason {choice['finish_reason']}, text {content[:40]!r})",
        )
    return CheckResult(name, "pass", f"stopped at EOS {eos} with no text")


def check_structure(
    f, ckpt, got: np.ndarray, tokens: list[int], file_type: str, routes: dict | None = None
) -> tuple[CheckResult, dict | None]:
    """The reference forward with the file's own dequantized weights and the source config, against llama.cpp's
    logits on the file: weight rounding is common to both, so only computation differences remain. `routes`
    (a MoE file: llama.cpp's expert choice per layer) are followed by the reference, so that a routing flip
    between two float32 computations (a discontinuity) does not pass for a structural error; the routing check
    reports the choice itself."""
    from exaone_gguf.model import forward_file

    name = "structure: file weights, source config"
    try:
        ref = forward_file(f, ckpt.spec, tokens, routes)
    except (KeyError, ValueError, InputError) as e:  # a missing or misshapen tensor: metadata names it
        return CheckResult(name, "fail", f"the reference forward cannot run on the file's tensors ({e})"), None
    c = compare_logits(ref, got, tokens)
    limit = structure_limit(file_type)
    ok, detail = judge_structure(c, limit)
    data = {"limit": dataclasses.asdict(limit), **c.to_dict()}
    if not ok and c.finite and rounds_activations(file_type):
        # Over the static limit: measure how much this network amplifies float32 summation order through the
        # rounding of its activations (16-bit, or Q8 before quantized products; the same forward summed in
        # float64), and judge against a few times that, at most the type's ceiling (small models rarely get
        # here: they cost nothing more).
        from exaone_gguf.model.ops import accumulate

        with accumulate(np.float64):
            ref64 = forward_file(f, ckpt.spec, tokens, routes)
        floor = compare_logits(ref64, ref, tokens)
        del ref64
        limit = limit_over_floor(limit, floor)
        ok, detail = judge_structure(c, limit)
        detail += (
            f"; limits raised to {NOISE_FLOOR_FACTOR:g}x this model's rounding noise floor (its reference summed "
            f"in float64 vs float32: max rel {floor.rel_logit_diff:.3g}, mean KLD {floor.mean_kld:.3g})"
            + (", capped at the type's ceiling" if floor_capped(limit, floor) else "")
        )
        data.update(limit=dataclasses.asdict(limit), noise_floor=floor.to_dict())
    return CheckResult(name, "pass" if ok else "fail", detail, data), c.to_dict()


def check_logits(
    got: np.ndarray,
    f,
    ckpt,
    tokens: list[int],
    thresholds: Thresholds,
    file_type: str,
    gate: bool,
    threads: int = 1,
    routes: dict | None = None,
    why: str = "",
    device: str = "cpu",
    structure: bool = False,
) -> tuple[list[CheckResult], dict | None]:
    """llama.cpp's logits `got` on the file against the source (fidelity.py). A float file (F32, F16, BF16) is
    compared with the source's own forward directly, and that is its fidelity too; its structure check runs
    unless the file holds the source's values exactly (F32, or the source's own precision: the same comparison
    with the same weights). A quantized file: llama.cpp on our float conversion of the source (the `base`,
    proven against the source's own forward), the file's metadata against the conversion's, and fidelity =
    `got` against `base`; with `structure`, the reference forward on the file's weights too. Run after llama.cpp
    has let go of the file, so the two never hold memory at once; numpy products on `threads` BLAS threads.
    `routes`: a MoE file's expert choice per layer as llama.cpp made it (None with `why` when it could not be
    read)."""
    from threadpoolctl import threadpool_limits

    if ckpt is None:
        finite = bool(np.isfinite(got).all())
        detail = f"{len(tokens)} positions finite" if finite else "logits contain NaN or infinity"
        return [CheckResult("logits: finite", "pass" if finite else "fail", detail)], None
    from exaone_gguf.validate.fidelity import check_source, float_conversion_logits, source_precision

    arch = f.get("general.architecture")
    as_arch = arch if writes_as(ckpt.spec, arch) else None
    ft = file_type.upper().removeprefix("MOSTLY_")
    float_file = ft in ("F32", "F16", "BF16")
    results = []
    with threadpool_limits(limits=threads):
        rounded = ft != "F32" and ft != source_precision(ckpt)  # weights rounded from the source's
        if rounded and (float_file or structure):
            check, _ = check_structure(f, ckpt, got, tokens, file_type, routes)
            results.append(check)
            trim_heap()
        if float_file:
            base, base_type, base_routes = got, ft, routes
        else:
            moe = any(t.name.endswith(".ffn_gate_inp.weight") for t in f.tensors)
            no_mtp = bool(ckpt.spec.extras.get("mtp_dropped"))  # a file converted with --no-mtp
            conversion = float_conversion_logits(ckpt.path, as_arch, tokens, threads, device, moe, no_mtp)
            base, base_type, base_routes = conversion.logits, conversion.type_name, conversion.routes
            results.append(check_against_conversion(f, conversion.arch, conversion.keys))
        source, source_c = check_source(ckpt, base, base_type, tokens, float_file, base_routes)
        routing: dict = {}  # a MoE reference forward records its expert choice per layer
        if routes is not None or why:
            from exaone_gguf.model import forward

            forward(ckpt, tokens, as_arch, routing)
        comparison = source_c if float_file else compare_logits(base, got, tokens)
    # fidelity: how much the type costs this model; below the thresholds a warning unless the gate is on or the
    # figure is far outside any honest file of the type
    results += [source] + [
        CheckResult(f"logits: {name.replace('_', ' ')}", status, detail)
        for name, status, detail in grade(comparison, thresholds, file_type, gate)
    ]
    metrics = {**comparison.to_dict(), "base": base_type, "source": source_c.to_dict()}
    if routing:
        check = check_routing(routes, routing, file_type, why=why)
        results.append(check)
        if check.data:
            metrics["routing"] = {str(layer): d for layer, d in check.data.items()}
    return results, metrics


def spilled(a: np.ndarray, path: Path) -> np.ndarray:
    """`a` written to `path` and mapped back read-only: its pages leave the process until they are read again."""
    np.save(path, a)
    return np.load(path, mmap_mode="r")


def validate(
    model: Path | str,
    reference: Path | str | None = None,
    device: str = "cpu",
    text: str | Path | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    threshold_overrides: dict[str, float] | None = None,
    threads: int | None = None,
    quality_gate: bool = False,
    imatrix: Path | str | None = None,
    structure: bool = False,
) -> Report:
    """`structure`: run the reference forward on a quantized file's own weights too (see check_logits).

    Exit status semantics: a "fail" means the file is wrong (tensors, structure, metadata, tokenizer,
    template); fidelity (logits vs the source) below the type's thresholds fails only with `quality_gate`
    or threshold overrides, else it is a warning."""
    start = time.perf_counter()
    model = Path(model)
    check_device(device)
    f = open_model(model)  # a split model: shard 1 and the rest, as llama.cpp loads it
    ckpt = load_checkpoint(reference) if reference is not None else None
    # a file converted with --no-mtp: no MTP block declared, no nextn tensor (a file with either is held to the
    # checkpoint's MTP blocks, so a lost nextn_predict_layers key is named)
    if ckpt is not None and ckpt.spec.extras.get("nextn") and not nextn_blocks(f, f.get("general.architecture")):
        if not any(".nextn." in t.name for t in f.tensors):
            ckpt = dataclasses.replace(ckpt, spec=without_mtp(ckpt.spec))
    imatrix_weights = load_imatrix(imatrix) if imatrix is not None else None
    eval_text = load_text(text)
    ft = file_type_name(f.get("general.file_type"))
    thresholds = override_thresholds(thresholds_for(ft), threshold_overrides)
    threads = resolve_threads(threads)
    report = Report(
        str(model),
        str(reference) if reference else None,
        ft,
        device,
        thresholds=dataclasses.asdict(thresholds),
        threads=threads,
    )
    checks = report.checks
    checks += check_metadata(f, ckpt)
    if ckpt is not None:
        checks.append(check_tensors(f, ckpt, imatrix_weights, threads))
        trim_heap()  # the tensor check's freed chunks go back to the system before llama.cpp loads the file

    eos = f.get("tokenizer.ggml.eos_token_id")
    # chat tokens and template: the source's own tokenizer files and template, else the file's own
    own, src = file_chat_vocab(f), source_chat_vocab(ckpt) if ckpt is not None else None
    checks += check_templates(
        src.template if src else None, own.template, own.bos, own.eos, (src.bos, src.eos) if src else None
    )

    try:
        runner = Runner(
            model, n_ctx=max(256, max_tokens), device=device, threads=threads
        )  # room for the chat check too
    except InputError as e:
        checks.append(CheckResult("llama.cpp: loads the file", "fail", str(e)))
        report.seconds = time.perf_counter() - start
        return report
    with runner:
        checks.append(CheckResult("llama.cpp: loads the file", "pass", f"{len(f.tensors)} tensors, device {device}"))
        reference = ckpt.tokenizer.build_reference() if ckpt is not None else None
        if reference is not None:
            checks.append(compare_tokenization(runner.llm, reference))
        else:
            checks.append(check_round_trip(runner.llm))
        checks.append(check_chat_tokens(runner.llm, src or own, reference))
        if own.template:
            checks.append(check_chat_stop(runner, eos))
        tokens = runner.llm.tokenize(eval_text.encode("utf-8"), add_bos=False, special=False)[:max_tokens]
        if len(tokens) < 2:
            raise InputError("the evaluation text is shorter than two tokens; give a longer --text.")
        got = runner.logits(tokens, copy=False)  # the runner's last eval (llama_routes uses a context of its own)
        routes, why = None, ""
        if ckpt is not None and any(t.name.endswith(".ffn_gate_inp.weight") for t in f.tensors):
            try:  # a MoE file: llama.cpp's expert choice, read from a second context on the loaded model
                routes = llama_routes(runner.llm, tokens)
            except RuntimeError as e:
                why = str(e)
    gate = quality_gate or bool(threshold_overrides)
    with tempfile.TemporaryDirectory(prefix="exaone-gguf-logits-") as tmp:
        # the file's logits wait on disk (and llama-cpp-python's buffer is let go) while llama.cpp maps the
        # source's float conversion, which at the 1.2B shape is 2.5 GB on its own
        got = spilled(got, Path(tmp) / "file-logits.npy")
        del runner
        gc.collect()  # llama-cpp-python's Llama sits in reference cycles: its buffer goes only at a collection
        results, metrics = check_logits(
            got, f, ckpt, tokens, thresholds, ft, gate, threads, routes, why, device, structure
        )
        del got
    checks += results
    report.metrics = metrics
    report.seconds = time.perf_counter() - start
    return report
