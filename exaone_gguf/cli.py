"""The `exaone-gguf` command line: argument declarations only; the work in `commands`, the printing in cli_print."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from exaone_gguf.cli_print import err, errors, ui
from exaone_gguf.families import demo_recipes, tiny_recipes
from exaone_gguf.quantize.formats import FILE_TYPES

APP_HELP = "Convert, quantize and validate EXAONE checkpoints as GGUF files for llama.cpp."
app = typer.Typer(add_completion=False, no_args_is_help=True, help=APP_HELP)

THREADS_HELP = "Worker threads (default: every core this process may use; output bytes do not depend on it)."
OUTTYPES = "|".join(["auto", *FILE_TYPES])
QTYPES = ", ".join([*(t for t in FILE_TYPES if t not in ("f32", "f16", "bf16")), "f16", "bf16", "f32"])
TENSOR_TYPE_HELP = (
    "Type for the tensors whose name matches the regex PATTERN (repeatable, first match wins), as llama-quantize."
)
TENSOR_TYPE = typer.Option([], "--tensor-type", metavar="PATTERN=TYPE", help=TENSOR_TYPE_HELP)
OUTPUT_TENSOR_TYPE = typer.Option(
    None, "--output-tensor-type", metavar="TYPE", help="Type for output.weight (as llama-quantize)."
)
TOKEN_EMBEDDING_TYPE = typer.Option(
    None, "--token-embedding-type", metavar="TYPE", help="Type for token_embd.weight (as llama-quantize)."
)
PURE = typer.Option(
    False, "--pure", help="Every quantized tensor gets the default type: no mixture rules (as llama-quantize)."
)
LEAVE_OUTPUT = typer.Option(
    False, "--leave-output-tensor", help="Keep output.weight in its source type (as llama-quantize)."
)
BPW_HELP = "Choose each tensor's type to reach B bits per weight with the least measured damage (needs --imatrix)."
TARGET_BPW = typer.Option(None, "--target-bpw", metavar="B", help=BPW_HELP)
SIZE_HELP = "As --target-bpw, for a file size (the whole file, header included): 700M, 1.5G (decimal)."
TARGET_SIZE = typer.Option(None, "--target-size", metavar="SIZE", help=SIZE_HELP)


@app.command()
def convert(
    src_dir: Path = typer.Argument(
        ...,
        metavar="SRC_DIR|REPO_ID",
        help="Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer), or a Hub repo id "
        "(ORG/NAME; fetched into the Hugging Face cache, HF_HUB_OFFLINE honoured); an existing directory wins.",
    ),
    output_arg: str = typer.Option(
        ..., "-o", "--output", help="Output .gguf file, or a directory (OUT_DIR/) for several types."
    ),
    outtype: str = typer.Option(
        "auto", "--outtype", help=f"Tensor type: {OUTTYPES}; a comma list (bf16,q8_0,q4_k_m) writes each into OUT_DIR/."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="llama.cpp importance matrix (GGUF or .dat)."),
    split_max_size: Optional[str] = typer.Option(
        None, "--split-max-size", help="Shards of at most this much tensor data: 5G, 500M (decimal, as gguf-split)."
    ),
    split_max_tensors: Optional[int] = typer.Option(
        None, "--split-max-tensors", min=1, help="Shards of at most N tensors."
    ),
    validate_out: bool = typer.Option(
        False, "--validate", help="Validate each output against SRC_DIR; the JSON report is kept beside it."
    ),
    arch: Optional[str] = typer.Option(
        None,
        "--arch",
        help="GGUF architecture: default the family's own; 'llama' writes EXAONE 3.x for older runtimes.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Convert weights containing NaN or infinity anyway (with a warning)."
    ),
    tensor_type: list[str] = TENSOR_TYPE,
    output_tensor_type: Optional[str] = OUTPUT_TENSOR_TYPE,
    token_embedding_type: Optional[str] = TOKEN_EMBEDDING_TYPE,
    pure: bool = PURE,
    leave_output_tensor: bool = LEAVE_OUTPUT,
    mmproj: bool = typer.Option(
        False, "--mmproj", help="Write the vision projector (EXAONE 4.5) instead: f32, f16 (auto), bf16 or q8_0."
    ),
    target_bpw: Optional[float] = TARGET_BPW,
    target_size: Optional[str] = TARGET_SIZE,
    push_to: Optional[str] = typer.Option(
        None,
        "--push",
        metavar="REPO_ID",
        help="Then push the release to this Hub model repository (validated first, as --validate; see `push`).",
    ),
    private: bool = typer.Option(False, "--private", help="--push: create the repository private."),
    quantized_by: Optional[str] = typer.Option(
        None, "--quantized-by", metavar="NAME", help="A release's model card credits NAME (quantized_by)."
    ),
    no_mtp: bool = typer.Option(
        False,
        "--no-mtp",
        help="Leave out the MTP blocks (K-EXAONE, EXAONE 4.5): llama.cpp loads them, never runs them.",
    ),
) -> None:
    """Convert a checkpoint directory into a GGUF file (quantized types in the same pass)."""
    args = dict(locals())
    from exaone_gguf.commands.convert import ConvertJob, convert

    with errors():
        convert(ConvertJob.parse(**args), ui)


@app.command("push")
def push_cmd(
    release_dir: Path = typer.Argument(..., metavar="RELEASE_DIR", help="A release folder (`convert -o OUT_DIR/`)."),
    repo_id: str = typer.Argument(..., metavar="REPO_ID", help="The Hub model repository, OWNER/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repository private (when it does not exist)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Every check, then list what would be sent (with sizes); send and create nothing."
    ),
    force: bool = typer.Option(
        False, "--force", help="Push a release whose validation failed or that was never validated."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Upload a validated release folder to a model repository on the Hugging Face Hub (token: HF_TOKEN or
    `hf auth login`); only what the repository lacks is sent, and the remote files are checked afterwards."""
    from exaone_gguf.commands.push import PushJob, push

    with errors():
        push(PushJob(release_dir, repo_id, private, dry_run, force, as_json), ui)


@app.command()
def quantize(
    input_gguf: Path = typer.Argument(..., metavar="IN.gguf", help="F32/F16/BF16 GGUF file."),
    output: Path = typer.Argument(..., metavar="OUT.gguf", help="Output file."),
    qtype: str = typer.Argument(
        ...,
        metavar="TYPE",
        help=QTYPES,
    ),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="llama.cpp importance matrix (GGUF or .dat)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    allow_requantize: bool = typer.Option(False, "--allow-requantize", help="Accept an already quantized input."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Quantize weights containing NaN or infinity anyway (with a warning)."
    ),
    tensor_type: list[str] = TENSOR_TYPE,
    output_tensor_type: Optional[str] = OUTPUT_TENSOR_TYPE,
    token_embedding_type: Optional[str] = TOKEN_EMBEDDING_TYPE,
    pure: bool = PURE,
    leave_output_tensor: bool = LEAVE_OUTPUT,
    target_bpw: Optional[float] = TARGET_BPW,
    target_size: Optional[str] = TARGET_SIZE,
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="--target-bpw/--target-size: the source checkpoint, to measure each tensor's KLD."
    ),
    no_mtp: bool = typer.Option(False, "--no-mtp", help="Leave out the MTP blocks, as convert --no-mtp."),
) -> None:
    """Quantize a GGUF file with llama.cpp's per-tensor type mixture and its exact kernels."""
    args = dict(locals())
    from exaone_gguf.commands.quantize import QuantizeJob, quantize

    with errors():
        quantize(QuantizeJob.parse(**args), ui)


@app.command()
def validate(
    model: Path = typer.Argument(..., metavar="MODEL.gguf", help="GGUF file to validate."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="Source checkpoint directory (or Hub repo id) to compare with."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (all layers offloaded)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON to this file."),
    text: Optional[Path] = typer.Option(
        None, "--text", help="Evaluation text file (default: built-in bilingual text)."
    ),
    max_tokens: int = typer.Option(256, "--max-tokens", min=2, help="Tokens of the evaluation text to compare."),
    threshold: list[str] = typer.Option(
        [], "--threshold", help="Override a fidelity threshold, e.g. max_mean_kld=0.01 (turns on --quality-gate)."
    ),
    quality_gate: bool = typer.Option(
        False, "--quality-gate", help="Fail (exit 1) when fidelity is below the type's thresholds; default: a warning."
    ),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="The imatrix the file was quantized with."),
    structure: bool = typer.Option(
        False,
        "--structure",
        help="--reference, quantized file: also run the reference forward on the file's own weights against "
        "llama.cpp on the file (a check of ggml's quantized kernels; one more forward). 16-bit files get it anyway.",
    ),
    full_tensors: bool = typer.Option(False, "--full-tensors", hidden=True, help="Deprecated: every row is checked."),
    against: Optional[Path] = typer.Option(
        None,
        "--against",
        metavar="BASE.gguf",
        help="Compare with a higher-precision GGUF as llama-perplexity --kl-divergence does.",
    ),
    ctx: int = typer.Option(512, "--ctx", min=4, help="--against: tokens per chunk (llama-perplexity's -c)."),
    chunks: Optional[int] = typer.Option(None, "--chunks", min=1, help="--against: at most this many chunks."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    mmproj: Optional[Path] = typer.Option(
        None,
        "--mmproj",
        metavar="MMPROJ.gguf",
        help="The vision projector of this text model (EXAONE 4.5): checked too, and a short generation with both.",
    ),
) -> None:
    """Check a GGUF: metadata, tokenizer, chat template; with --reference every row of its tensors, the source's own
    forward against llama.cpp on our float conversion of it, and its fidelity (logits against that conversion). A
    projector file (clip) gets the vision checks and libmtmd's image embedding against the reference. Exit 1: the
    file is wrong."""
    args = dict(locals())
    from exaone_gguf.commands.validate import ValidateJob, validate

    if args.pop("full_tensors"):
        err.print("--full-tensors is deprecated and does nothing: every row of every tensor is checked by default.")
    with errors():
        validate(ValidateJob.parse(**args), ui)


@app.command()
def imatrix(
    src_dir: Path = typer.Argument(..., help="Hugging Face checkpoint directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Output imatrix .gguf file (llama-imatrix's format)."),
    text: Optional[Path] = typer.Option(None, "--text", help="Calibration text (UTF-8); default: the built-in text."),
    ctx: int = typer.Option(512, "--ctx", min=1, help="Tokens per chunk (llama-imatrix's -c)."),
    chunks: Optional[int] = typer.Option(None, "--chunks", min=1, help="At most this many chunks (default: all)."),
    parse_special: bool = typer.Option(
        False,
        "--parse-special",
        help="Read special tokens written in --text (e.g. [|user|]) as those tokens, as llama-imatrix's "
        "--parse-special does; by default they are plain text, as llama-imatrix reads them. The built-in text's "
        "chat turns are always read as tokens.",
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Compute an importance matrix from the source checkpoint (float32 reference forward) for --imatrix."""
    args = dict(locals())
    from exaone_gguf.commands.tools import ImatrixJob, imatrix

    with errors():
        imatrix(ImatrixJob.parse(**args), ui)


@app.command("make-tiny")
def make_tiny_cmd(
    args: list[str] = typer.Argument(
        ..., metavar="[FAMILY] OUT_DIR", help=f"FAMILY: {' | '.join(tiny_recipes())} (optional with --from-config)."
    ),
    seed: int = typer.Option(0, "--seed"),
    tokenizer_dir: Optional[Path] = typer.Option(None, "--tokenizer-dir", help="Use real tokenizer files from DIR."),
    from_config: Optional[Path] = typer.Option(None, "--from-config", help="Keep every key of this config.json."),
    layers: Optional[int] = typer.Option(None, "--layers", min=1),
    hidden: Optional[int] = typer.Option(None, "--hidden", min=1),
    heads: Optional[int] = typer.Option(None, "--heads", min=1),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", min=1),
    head_dim: Optional[int] = typer.Option(None, "--head-dim", min=2),
    intermediate: Optional[int] = typer.Option(None, "--intermediate", min=1),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT_DIR."),
) -> None:
    """Write a tiny random checkpoint (real names and keys, tiny sizes) for tests and the demo."""
    args = dict(locals())
    from exaone_gguf.commands.tools import MakeTinyJob, make_tiny

    with errors():
        make_tiny(MakeTinyJob.parse(**args), ui)


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="GGUF file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Show a GGUF file's header, metadata, tensors and bits per weight."""
    from exaone_gguf.commands.tools import InspectJob, inspect

    with errors():
        inspect(InspectJob(model, as_json), ui)


@app.command()
def demo(
    workdir: Optional[Path] = typer.Argument(None, help="Keep the files here (default: a temporary directory)."),
    families: str = typer.Option(",".join(demo_recipes()), "--families", help="Comma-separated make-tiny families."),
    types: str = typer.Option("bf16,q8_0,q4_k_m", "--types", help="Comma-separated output types."),
) -> None:
    """Make tiny checkpoints, convert, quantize, validate and chat with them; a table at the end."""
    from exaone_gguf.commands.tools import DemoJob, demo

    with errors():
        demo(DemoJob.parse(workdir, families, types), ui)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
