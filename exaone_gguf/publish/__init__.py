"""publish: every variant of a checkpoint in one folder, from one read of the source.

`publish(src, out_dir, ["bf16", "q8_0", "q4_k_m"])` writes `{Basename}-{Size}[-{Finetune}]-{TYPE}.gguf` per type
(shards `...-00001-of-0000N.gguf` with --split-max-size), optionally validates each against the source
(`{stem}.validation.json` beside it), an Ollama Modelfile per variant (`{stem}.Modelfile`), the model card
`README.md` and the `SHA256SUMS` manifest. It runs the stages of convert.driver, as a single convert does.
(`exaone-gguf convert` chooses between a release and one file in commands.convert.)
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from exaone_gguf.checkpoint import Checkpoint
from exaone_gguf.convert import driver
from exaone_gguf.convert.multiwrite import assign_paths
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.errors import InputError, ValidationFailed
from exaone_gguf.gguf_io.split import parse_shard_name
from exaone_gguf.gguf_io.writer import GGUFPlan, check_output_path
from exaone_gguf.publish.card import CardInfo, FileRow, ProjectorRow, render_card
from exaone_gguf.publish.chart import chart_rows, write_chart
from exaone_gguf.publish.manifest import MANIFEST_NAME, write_manifest
from exaone_gguf.publish.modelfile import chat_family, render_modelfile
from exaone_gguf.validate import validate as validate_gguf
from exaone_gguf.validate.mmproj import validate_mmproj
from exaone_gguf.vision import release_projector_path, write_release_projector

__all__ = ["publish", "variant_stem", "report_path", "validate_output", "PublishResult", "PublishedVariant"]

DEFAULT_OUTTYPES = "bf16,q8_0,q6_k,q5_k_m,q4_k_m"


@dataclass
class PublishedVariant:
    outtype: str  # upper case, as in the file name
    files: list[Path]
    size: int
    bits_per_weight: float
    n_tensors: int
    modelfile: Path | None = None
    report: Path | None = None
    passed: bool | None = None
    mean_kld: float | None = None
    same_top1: float | None = None
    imatrix: bool = False  # quantized with the release's --imatrix
    target: dict | None = None  # a target-bpw variant: ConvertResult.target (the target, bytes, type counts)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["files"] = [str(p) for p in self.files]
        for k in ("modelfile", "report"):
            d[k] = str(d[k]) if d[k] else None
        return d


@dataclass
class PublishResult:
    out_dir: Path
    variants: list[PublishedVariant] = field(default_factory=list)
    card: Path | None = None
    manifest: Path | None = None
    seconds: float = 0.0
    nonfinite: list[str] = field(default_factory=list)  # source tensors with NaN/inf (allow_nonfinite)
    threads: int = 1
    chart: Path | None = None  # the quality chart (PNG), with --validate
    chart_shown: dict = field(default_factory=dict)  # its points and axes as plotted (publish.chart.write_chart)
    projector: Path | None = None  # the vision projector (mmproj-...-F16.gguf) of an EXAONE 4.5 release
    projector_report: Path | None = None  # its validation report, with --validate
    projector_passed: bool | None = None

    @property
    def passed(self) -> bool:
        return not any(v.passed is False for v in self.variants) and self.projector_passed is not False

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "variants": [v.to_dict() for v in self.variants],
            "card": str(self.card) if self.card else None,
            "manifest": str(self.manifest) if self.manifest else None,
            "seconds": round(self.seconds, 3),
            "nonfinite": self.nonfinite,
            "threads": self.threads,
            "chart": str(self.chart) if self.chart else None,
            "projector": str(self.projector) if self.projector else None,
            "projector_report": str(self.projector_report) if self.projector_report else None,
            "projector_passed": self.projector_passed,
        }


@dataclass
class _Total:
    data_bytes: int  # what the CLI's progress bar needs from a plan


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", s).strip("-")


def variant_stem(plan: GGUFPlan, outtype: str) -> str:
    """`{Basename}-{Size}[-{Finetune}]-{TYPE}` from the plan's general.* keys (LG's naming, e.g.
    EXAONE-4.0-1.2B-Q4_K_M, EXAONE-3.5-2.4B-Instruct-BF16)."""
    kv = {k: v[1] for k, v in plan.kv.items()}
    parts = [
        kv.get("general.basename") or kv.get("general.name") or "model",
        kv.get("general.size_label"),
        kv.get("general.finetune"),
    ]
    return "-".join(_safe(str(p)) for p in parts if p) + f"-{outtype.upper()}"


def _bits_per_weight(plan: GGUFPlan) -> float:
    params = sum(math.prod(t.shape) for t in plan.tensors)
    return sum(t.nbytes for t in plan.tensors) * 8 / params if params else 0.0


def report_path(gguf: Path) -> Path:
    """Where a file's validation report goes: X.gguf or X-00001-of-0000N.gguf -> X.validation.json."""
    parsed = parse_shard_name(gguf)
    stem = parsed[0].name if parsed else Path(gguf).name.removesuffix(".gguf")
    return Path(gguf).with_name(stem + ".validation.json")


def validate_output(
    first: Path,
    src: Path,
    report_path: Path,
    device: str = "cpu",
    threads: int | None = None,
    imatrix: Path | str | None = None,
):
    """Run the validator on `first` (a file or first shard) against `src` (with the imatrix the file was
    quantized with, so the tensor check re-quantizes as it did); write its JSON report."""
    report = validate_gguf(first, src, device=device, threads=threads, imatrix=imatrix)
    report.write_json(report_path)
    return report


def _source_id(ckpt: Checkpoint, plan: GGUFPlan) -> str:
    name = ckpt.model_id
    if "/" in name and not Path(name).is_absolute() and not name.startswith("."):
        return name
    kv = {k: v[1] for k, v in plan.kv.items()}
    org, nm = kv.get("general.organization"), kv.get("general.name")
    return f"{org}/{nm}" if org and nm else str(nm or ckpt.path.name)


def _card_info(ckpt: Checkpoint, plan: GGUFPlan, title: str, quantized_by: str | None) -> CardInfo:
    card = ckpt.card

    def as_list(v) -> list[str]:
        return [v] if isinstance(v, str) and v else [str(x) for x in v] if isinstance(v, list) else []

    def as_str(v) -> str | None:
        return v if isinstance(v, str) and v else None

    arch = plan.kv["general.architecture"][1]
    template = plan.kv.get("tokenizer.chat_template", (None, None))[1]
    return CardInfo(
        title=title,
        base_model=_source_id(ckpt, plan),
        license=as_str(card.get("license")),
        license_name=as_str(card.get("license_name")),
        license_link=as_str(card.get("license_link")),
        languages=as_list(card.get("language")),
        tags=as_list(card.get("tags")),
        family=chat_family(arch, template),
        arch=arch,
        quantized_by=quantized_by,
    )


def publish(src: Path | str, out_dir: Path | str, opts: ConvertOptions | None = None) -> PublishResult:
    """Write every variant of `src` (opts.outtype, default DEFAULT_OUTTYPES) into `out_dir` with card,
    Modelfiles and manifest (see module doc). Raises ValidationFailed (after writing everything) when a
    validated variant fails a check."""
    start = time.perf_counter()
    opts = opts or ConvertOptions(outtype=DEFAULT_OUTTYPES)
    src, out_dir = Path(src), Path(out_dir)
    types = opts.outtypes()
    max_bytes, max_tensors = opts.split_limits()
    ckpt = driver.load_source(src, opts)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: is a file; give a directory for several output types.")
    if out_dir.resolve().is_relative_to(src.resolve()):
        raise InputError(f"{out_dir}: lies inside the source directory {src}; write the output elsewhere.")
    variants = driver.plan_variants_for(ckpt, types, opts)
    stems = [variant_stem(v.plan, v.outtype) for v in variants]
    if len(set(stems)) != len(stems):  # e.g. auto and bf16 on a BF16 source
        raise InputError(f"--outtype: two types give the same file {stems[0]}.gguf; list each output type once.")
    for v, stem in zip(variants, stems):
        assign_paths(v, out_dir / f"{stem}.gguf", max_bytes, max_tensors)

    family = chat_family(
        variants[0].plan.kv["general.architecture"][1],
        variants[0].plan.kv.get("tokenizer.chat_template", (None, None))[1],
    )
    extras = [out_dir / "README.md", out_dir / MANIFEST_NAME] + [out_dir / f"{s}.Modelfile" for s in stems]
    title = stems[0][: -len(variants[0].outtype) - 1]
    chart = out_dir / f"{title}-quality.png"
    extras += [out_dir / f"{s}.validation.json" for s in stems] + [chart] if opts.validate else []
    projector = release_projector_path(src, out_dir, title)  # EXAONE 4.5: the vision projector beside the text
    extras += [projector] if projector else []
    extras += [report_path(projector)] if projector and opts.validate else []
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for p in [p for v in variants for p in v.paths] + extras:
            check_output_path(p, opts.inputs(src), opts.force)
        total = _Total(sum(v.plan.data_bytes for v in variants))
        nonfinite, sizes = driver.write_planned(ckpt, variants, opts, total, hash=True)
        written = [p for v in variants for p in v.paths]
        projector_sha = write_release_projector(src, projector, opts.progress)[1] if projector else None
    except BaseException:
        # the writer removed every file it began; the text files of a later failure (the projector) go too, as
        # one write's already renamed files do (gguf_io.writer.write_outputs): no release is left half-written
        for p in written:
            p.unlink(missing_ok=True)
        if created:  # the folder this run made goes too
            with contextlib.suppress(OSError):  # not empty: something else is in it now; leave it
                out_dir.rmdir()
        raise

    result = PublishResult(out_dir, nonfinite=nonfinite, threads=opts.threads)
    card = ckpt.card
    lic = " ".join(
        str(x)
        for x in (card.get("license_name") or card.get("license"), card.get("license_link"))
        if isinstance(x, str) and x
    )
    for v, stem, size in zip(variants, stems, sizes):
        pv = PublishedVariant(v.outtype.upper(), v.paths, size, _bits_per_weight(v.plan), len(v.plan.tensors))
        pv.imatrix = "quantize.imatrix.file" in v.plan.kv
        pv.target = v.result.target
        pv.modelfile = out_dir / f"{stem}.Modelfile"
        pv.modelfile.write_text(
            render_modelfile(v.first_path.name, family, lic or None, projector=projector.name if projector else None),
            encoding="utf-8",
        )
        if opts.validate:
            pv.report = out_dir / f"{stem}.validation.json"
            report = validate_output(v.first_path, src, pv.report, opts.device, opts.threads, opts.imatrix)
            pv.passed = report.passed
            if report.metrics:
                pv.mean_kld, pv.same_top1 = report.metrics.get("mean_kld"), report.metrics.get("same_top1")
            if opts.on_validated:
                opts.on_validated(report)
        result.variants.append(pv)
    projector_row = None
    if projector:
        projector_row = ProjectorRow(projector.name, "F16", projector.stat().st_size)
    if projector and opts.validate:  # the projector's own checks, and a short generation with the first text file
        result.projector_report = report_path(projector)
        vision = validate_mmproj(
            projector, src, text_model=result.variants[0].files[0], threads=opts.threads, generate=True
        )
        vision.write_json(result.projector_report)
        result.projector_passed = vision.passed
        emb = next((c.data for c in vision.checks if c.name == "image embedding" and c.data), {})
        projector_row.cosine, projector_row.max_rel_error = emb.get("cosine"), emb.get("max_rel_error")
        projector_row.validation = "passed" if vision.passed else "FAILED"
        projector_row.report = result.projector_report.name
        if opts.on_validated:
            opts.on_validated(vision)

    rows = [
        FileRow(
            pv.outtype,
            [p.name for p in pv.files],
            pv.size,
            pv.bits_per_weight,
            pv.modelfile.name if pv.modelfile else None,
            pv.mean_kld,
            pv.same_top1,
            None if pv.passed is None else ("passed" if pv.passed else "FAILED"),
            pv.report.name if pv.report else None,
            pv.imatrix,
            pv.target,
        )
        for pv in result.variants
    ]
    if chart_rows(rows):  # --validate measured the logits: the quality chart beside the table
        result.chart_shown = write_chart(rows, chart, title)
        result.chart = chart
    result.card = out_dir / "README.md"
    card_text = render_card(
        _card_info(ckpt, variants[0].plan, title, opts.quantized_by),
        rows,
        MANIFEST_NAME,
        result.chart.name if result.chart else None,
        projector_row,
        imatrix=Path(opts.imatrix).name if opts.imatrix else None,
    )
    result.card.write_text(card_text, encoding="utf-8")
    ggufs = [p for pv in result.variants for p in pv.files] + ([projector] if projector else [])
    others = [p for pv in result.variants for p in [pv.modelfile, pv.report] if p is not None] + [result.card]
    others += [result.chart] if result.chart else []
    others += [result.projector_report] if result.projector_report else []
    streamed = {p: d for v in variants for p, d in v.sha256.items()} | ({projector: projector_sha} if projector else {})
    result.manifest = write_manifest(out_dir, streamed, ggufs, others)
    result.projector = projector
    result.seconds = time.perf_counter() - start
    failed = [pv.outtype for pv in result.variants if pv.passed is False]
    failed += [projector.name] if result.projector_passed is False else []
    if failed:
        raise ValidationFailed(f"{', '.join(failed)} failed validation; see the .validation.json reports in {out_dir}.")
    return result
