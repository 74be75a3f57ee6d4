"""The model card (README.md) of a published GGUF folder: front matter, a table of files, usage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from exaone_gguf.checkpoint.hub import is_repo_id
from exaone_gguf.families import chat_format


@dataclass
class FileRow:
    """One variant in the card's table."""

    outtype: str  # BF16, Q4_K_M, ...
    files: list[str]  # one name, or the shards (first one first)
    size: int  # bytes, all shards
    bits_per_weight: float
    modelfile: str | None = None
    mean_kld: float | None = None
    same_top1: float | None = None  # percent
    validation: str | None = None  # "passed" / "FAILED" / None when not validated
    report: str | None = None  # the validation JSON's file name
    imatrix: bool = False  # quantized with an importance matrix
    target: dict | None = None  # a target-bpw variant: {"bpw", "types": {type: count}, ...}


@dataclass
class ProjectorRow:
    """The vision projector (EXAONE 4.5) in the card: its file and, validated, libmtmd's image embedding
    against the source's (cosine, max relative error)."""

    file: str
    outtype: str  # F16
    size: int
    cosine: float | None = None
    max_rel_error: float | None = None
    validation: str | None = None  # "passed" / "FAILED" / None when not validated
    report: str | None = None


@dataclass
class CardInfo:
    title: str  # e.g. EXAONE-4.0-1.2B
    base_model: str | None  # e.g. LGAI-EXAONE/EXAONE-4.0-1.2B
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    languages: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    family: str | None = None  # a chat format name (families.ChatFormat.name) or None
    arch: str = ""
    quantized_by: str | None = None  # who made the files (convert --quantized-by), as GGUF repositories credit it


def _yaml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def front_matter(info: CardInfo) -> str:
    """The card's YAML header, with the keys the Hub reads for a GGUF repository: `base_model` (a Hub repo id;
    left out for a source that has none, which the Hub would refuse) with `base_model_relation: quantized`, so the
    Hub lists the files under the base model's quantizations; `library_name: gguf` and the `gguf` tag."""
    lines = ["---"]
    if info.license:
        lines.append(f"license: {_yaml_str(info.license)}")
    if info.license_name:
        lines.append(f"license_name: {_yaml_str(info.license_name)}")
    if info.license_link:
        lines.append(f"license_link: {_yaml_str(info.license_link)}")
    if info.base_model and is_repo_id(info.base_model):
        lines += [f"base_model: {_yaml_str(info.base_model)}", "base_model_relation: quantized"]
    if info.languages:
        lines += ["language:"] + [f"- {_yaml_str(x)}" for x in info.languages]
    lines += ["library_name: gguf", "pipeline_tag: text-generation", "tags:"]
    tags = list(dict.fromkeys([*info.tags, "gguf", "llama.cpp", "exaone"]))
    lines += [f"- {_yaml_str(t)}" for t in tags]
    if info.quantized_by:
        lines.append(f"quantized_by: {_yaml_str(info.quantized_by)}")
    lines.append("---")
    return "\n".join(lines)


def _fmt_size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def files_table(rows: list[FileRow]) -> str:
    out = [
        "| File | Type | Size | Bits/weight | Mean KLD | Same top-1 | Validation |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        name = f"[{r.files[0]}]({r.files[0]})" + (f" (+{len(r.files) - 1} shards)" if len(r.files) > 1 else "")
        val = r.validation or "not run"
        if r.report:
            val = f"[{val}]({r.report})"
        same = "-" if r.same_top1 is None else f"{r.same_top1:.1f}%"
        marks = [m for m, on in (("imatrix", r.imatrix), ("target-bpw", r.target is not None)) if on]
        kind = r.outtype + (f" ({', '.join(marks)})" if marks else "")
        out.append(
            f"| {name} | {kind} | {_fmt_size(r.size)} | {r.bits_per_weight:.2f} | {_fmt(r.mean_kld, '.5f')} "
            f"| {same} | {val} |"
        )
    return "\n".join(out)


def projector_section(row: ProjectorRow) -> str:
    val = row.validation or "not run"
    if row.report:
        val = f"[{val}]({row.report})"
    return "\n".join(
        [
            "### Vision projector",
            "",
            "Images need the projector beside the text file (llama.cpp's `--mmproj`, a second `FROM` in the "
            "Modelfile). Validation compares the image embedding llama.cpp computes for a test image with the "
            "source's vision tower (a NumPy reference) and generates a few tokens after the image with the first "
            "text file.",
            "",
            "| File | Type | Size | Image embedding cosine | Max relative error | Validation |",
            "|---|---|---:|---:|---:|---|",
            f"| [{row.file}]({row.file}) | {row.outtype} | {_fmt_size(row.size)} | {_fmt(row.cosine, '.6f')} "
            f"| {_fmt(row.max_rel_error, '.2e')} | {val} |",
            "",
        ]
    )


def usage(info: CardInfo, rows: list[FileRow]) -> str:
    pick = next((r for r in rows if r.outtype == "Q4_K_M"), rows[-1])
    f = pick.files[0]
    name = info.title.lower()
    parts = ["## Usage", ""]
    if any(len(r.files) > 1 for r in rows):
        parts += [
            "Split files: download every shard into one folder and give the **first** shard "
            "(`-00001-of-0000N.gguf`); llama.cpp finds the others. "
            "`llama-gguf-split --merge FIRST_SHARD OUT.gguf` joins them.",
            "",
        ]
    parts += ["### llama.cpp", "", "```sh", f"llama-cli -m {f} -cnv", f"llama-server -m {f} --jinja -c 8192", "```", ""]
    fmt = chat_format(info.family)
    if fmt is not None and fmt.card_note:  # what the family's model card advises (reasoning, sampling)
        parts += [fmt.card_note, ""]
    parts += [
        "### llama-cpp-python",
        "",
        "```python",
        "from llama_cpp import Llama",
        "",
        f'llm = Llama(model_path="{f}", n_ctx=8192)',
        'out = llm.create_chat_completion(messages=[{"role": "user", "content": "안녕하세요!"}])',
        'print(out["choices"][0]["message"]["content"])',
        "```",
        "",
        "The file carries the model's own chat template, which `create_chat_completion` uses.",
        "",
    ]
    if pick.modelfile:
        parts += [
            "### Ollama",
            "",
            "Each GGUF has a Modelfile beside it with the chat template, the stop token `[|endofturn|]` and the "
            "recommended sampling parameters:",
            "",
            "```sh",
            f"ollama create {name}:{pick.outtype.lower()} -f {pick.modelfile}",
            f"ollama run {name}:{pick.outtype.lower()}",
            "```",
            "",
        ]
    return "\n".join(parts)


def quant_notes(rows: list[FileRow], imatrix: str | None) -> list[str]:
    """What the table's (imatrix) and (target-bpw) marks mean, and each target variant's plan."""
    out = []
    if imatrix and any(r.imatrix for r in rows):
        out += [
            f"Files marked *imatrix* were quantized with the importance matrix `{imatrix}` (collected from the "
            "source checkpoint by `exaone-gguf imatrix`; its name is in each file's `quantize.imatrix.file`).",
            "",
        ]
    for r in rows:
        if r.target is None:
            continue
        plan = ", ".join(f"{n} {t}" for t, n in sorted(r.target["types"].items(), key=lambda kv: -kv[1]))
        goal = f"{r.target['bpw']:g} bits per weight" if r.target.get("bpw") else f"{r.target['size']} bytes"
        out += [
            f"`{r.files[0]}` chooses each tensor's type to reach {goal} with the "
            f"least measured damage ({r.target['measure']}): {plan} tensors; each tensor's type is in the file.",
            "",
        ]
    return out


def render_card(
    info: CardInfo,
    rows: list[FileRow],
    manifest: str | None = None,
    chart: str | None = None,
    projector: ProjectorRow | None = None,
    imatrix: str | None = None,
) -> str:
    """The whole README.md (`chart`: the quality chart's file name, shown beside the table; `projector`: the
    vision projector's file and figures, EXAONE 4.5; `imatrix`: the importance matrix's file name when the
    quantized files used one)."""
    src = (
        f"[{info.base_model}](https://huggingface.co/{info.base_model})"
        if info.base_model and "/" in info.base_model
        else (info.base_model or "the source checkpoint")
    )
    body = [
        front_matter(info),
        "",
        f"# {info.title} GGUF",
        "",
        f"GGUF files of {src} for llama.cpp (architecture `{info.arch}`), written by "
        "exaone-gguf from the original weights in one pass. Quantized tensors are "
        "byte-identical to llama.cpp's own quantizer, with its per-tensor type mixtures.",
        "",
        "## Files",
        "",
        files_table(rows),
        "",
        *quant_notes(rows, imatrix),
    ]
    if chart:
        body += [
            f"![Mean KL divergence and same top-1 against bits per weight, one point per file]({chart})",
            "",
            "The chart plots the table's validation figures against bits per weight: the further left a file sits "
            "with a low KLD and a high same top-1, the better its size buys quality.",
            "",
        ]
    if any(r.validation for r in rows):
        body += [
            "Validation runs each file in llama.cpp (llama-cpp-python) and compares its next-token distributions "
            "with the source checkpoint's (a NumPy reference forward pass) on a bilingual text: mean KL divergence "
            "(lower is better) and the share of positions with the same most likely token. Each file's full report "
            "is the JSON file linked in the table.",
            "",
        ]
    if projector:
        body.append(projector_section(projector))
    body.append(usage(info, rows))
    if manifest:
        body += [
            "## Checksums",
            "",
            f"`{manifest}` lists the SHA-256 of every file here (`sha256sum -c {manifest}`).",
            "",
        ]
    if info.license:
        lic = info.license_name or info.license
        link = f" ({info.license_link})" if info.license_link else ""
        body += [
            "## License",
            "",
            f"These files are derived from the original model and carry its license: {lic}{link}.",
            "",
        ]
    return "\n".join(body).rstrip() + "\n"
