"""Issue 21, item 1: on a real trained network (SmolLM2-135M-Instruct, scripts/smollm2_checkpoint.py) in both
layouts, every honest file passes `validate --reference` with its defaults: our own convert at every type the
issue names (the IQ4_XS one with an imatrix of our own), and in the Llama layout llama.cpp's own converter and
llama-quantize, directly from its F32 file and through its F16 file."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli
from test_llamacpp_files import llama_convert, llama_quantize

from exaone_gguf.validate import validate

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

HONEST = ("f32", "bf16", "q8_0", "q6_k", "q4_k_m", "q3_k_m", "q2_k")
LAYOUTS = ("exaone3", "llama")
LLAMACPP = ("Q8_0", "Q4_K_M", "Q2_K")


def cli(*args: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def failures(report) -> list[tuple[str, str]]:
    return [(c.name, c.detail) for c in report.checks if c.status == "fail"]


@pytest.fixture(scope="module")
def ours(smollm2, tmp_path_factory):
    """ours(layout) -> ({outtype: GGUF}, imatrix): one release of every honest type, and IQ4_XS with an imatrix."""
    made: dict[str, tuple[dict[str, Path], Path]] = {}

    def get(layout: str):
        if layout not in made:
            src, out = smollm2(layout), tmp_path_factory.mktemp(f"ours-{layout}")
            cli("convert", str(src), "--outtype", ",".join(HONEST), "-o", f"{out}/")
            imatrix = out / "imatrix.gguf"
            cli("imatrix", str(src), "-o", str(imatrix))
            cli("convert", str(src), "--outtype", "iq4_xs", "--imatrix", str(imatrix), "-o", str(out / "iq4_xs.gguf"))
            files = {t: next(out.glob(f"*-{t.upper()}.gguf")) for t in HONEST}
            made[layout] = ({**files, "iq4_xs": out / "iq4_xs.gguf"}, imatrix)
        return made[layout]

    return get


@pytest.mark.parametrize("outtype", (*HONEST, "iq4_xs"))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_our_honest_files_pass(ours, smollm2, layout, outtype):
    files, imatrix = ours(layout)
    report = validate(files[outtype], smollm2(layout), imatrix=imatrix if outtype == "iq4_xs" else None)
    assert report.passed, failures(report)


@pytest.mark.parametrize("via", ("f32", "f16"))
def test_llamacpp_files_pass(llama_tools, smollm2, tmp_path, via):
    src = smollm2("llama")
    base = llama_convert(llama_tools, src, tmp_path / f"lc-{via}.gguf", via)
    for qtype in LLAMACPP:
        path = llama_quantize(llama_tools, base, tmp_path / f"lc-{via}-{qtype}.gguf", qtype)
        report = validate(path, src)
        assert report.passed, (via, qtype, failures(report))


def test_target_size_is_a_budget_for_the_whole_file(ours, smollm2, tmp_path):
    """Issue 21, item 4 on the trained network: `--target-size N` (N = the honest Q4_K_M file's own size, header and
    vocabulary included) gives a file of at most N bytes that still fills most of it, and it validates."""
    files, imatrix = ours("exaone3")
    src, budget = smollm2("exaone3"), files["q4_k_m"].stat().st_size
    out = tmp_path / "target.gguf"
    cli("convert", str(src), "--outtype", "q4_k_m", "--imatrix", str(imatrix), "--target-size", str(budget),
        "-o", str(out))  # fmt: skip
    size = out.stat().st_size
    print(f"target {budget} bytes, file {size} bytes ({size / budget:.4f})")
    assert 0.97 * budget < size <= budget
    report = validate(out, src, imatrix=imatrix)
    assert report.passed, failures(report)
