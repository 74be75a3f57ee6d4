"""Issue 21, item 3: the validator does not repeat a wrong tensor table.

The family's tensor table is broken in this process (gate and up swapped; q permuted twice), for the converter
that makes the files and for validate alike, as a bug in the table would be: the tensor check (a fresh
quantization through the same table), the structure check when it runs (the file's own weights) and llama.cpp's fidelity
against the float conversion (made through the same table) all agree with such a file. Only the source's own
forward (model/source.py: HF names and config keys, nothing of the table) sees it, and the
`source:` check fails the BF16 and Q4_K_M files. The honest files of the same checkpoint pass it.

The check compares with llama.cpp on a float conversion (F32, F16 or BF16: the source's own precision), or on the
file itself when it is at that precision: the broken table fails at each.
"""

from __future__ import annotations

import dataclasses

import pytest
from hf_models import cast_checkpoint

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.families import registry
from exaone_gguf.validate import validate

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

FAMILY = "llama"  # q/k rows permuted for llama.cpp's interleaved RoPE: a table with a transform to get wrong
SOURCE_CHECK = "source: its own forward vs llama.cpp"


def _swap_gate_up(mappings):
    names = {m.gguf_name: m.hf_name for m in mappings}
    partner = lambda g: g.replace("ffn_gate", "ffn_up") if "ffn_gate" in g else g.replace("ffn_up", "ffn_gate")  # noqa: E731
    return [
        dataclasses.replace(m, hf_name=names[partner(m.gguf_name)])
        if ".ffn_gate." in m.gguf_name or ".ffn_up." in m.gguf_name
        else m
        for m in mappings
    ]


def _permute_q_twice(mappings):
    def twice(t):
        return lambda x: t(t(x))

    return [
        dataclasses.replace(m, transform=twice(m.transform)) if m.gguf_name.endswith("attn_q.weight") else m
        for m in mappings
    ]


BREAKS = {"gate-up-swapped": _swap_gate_up, "q-permuted-twice": _permute_q_twice}


@pytest.fixture
def broken_table(request, monkeypatch):
    fam = registry.families()[FAMILY]
    brk = BREAKS[request.param]
    monkeypatch.setitem(
        registry._FAMILIES, FAMILY, dataclasses.replace(fam, tensor_map=lambda spec: brk(fam.tensor_map(spec)))
    )
    return request.param


def _failed(report) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if c.status == "fail"}


@pytest.mark.parametrize("broken_table", sorted(BREAKS), indirect=True)
@pytest.mark.parametrize("outtype", ["bf16", "q4_k_m"])
def test_a_broken_table_fails_its_files(tiny_dir, tmp_path, broken_table, outtype):
    src = tiny_dir(FAMILY)
    out = tmp_path / f"broken-{outtype}.gguf"
    convert(src, out, ConvertOptions(outtype=outtype))
    report = validate(out, src, max_tokens=64)
    failed = _failed(report)
    print(broken_table, outtype, {k: v[:160] for k, v in failed.items()})
    assert not report.passed
    assert SOURCE_CHECK in failed, failed
    source = next(c for c in report.checks if c.name == SOURCE_CHECK)
    assert source.data["mean_kld"] > 100 * source.data["limit"]["max_mean_kld"], source.detail
    assert "tensor table" in source.detail


@pytest.mark.parametrize("outtype", ["bf16", "q4_k_m"])
def test_the_honest_files_pass_the_source_check(tiny_gguf, tiny_dir, outtype):
    report = validate(tiny_gguf(FAMILY, outtype), tiny_dir(FAMILY), max_tokens=64)
    source = next(c for c in report.checks if c.name == SOURCE_CHECK)
    print(outtype, source.detail, {k: v[:160] for k, v in _failed(report).items()})
    assert source.status == "pass", source.detail
    assert report.passed, _failed(report)


@pytest.fixture(scope="module")
def stored_as(tiny_dir, tmp_path_factory):
    """stored_as(dtype) -> the tiny Llama checkpoint with its weights in `dtype`."""
    root = tmp_path_factory.mktemp("dtypes")
    built = {}

    def get(dtype: str):
        if dtype not in built:
            built[dtype] = cast_checkpoint(tiny_dir(FAMILY), root / dtype, dtype)
        return built[dtype]

    return get


PRECISIONS = [
    ("float32", "q8_0"),  # an F32 conversion
    ("float32", "f32"),  # the file itself, at the source's precision
    ("bfloat16", "q8_0"),  # a BF16 conversion
    ("bfloat16", "bf16"),  # the file itself
]


@pytest.mark.parametrize("broken_table", ["gate-up-swapped"], indirect=True)
@pytest.mark.parametrize(("dtype", "outtype"), PRECISIONS, ids=[f"{d}-{t}" for d, t in PRECISIONS])
def test_a_broken_table_fails_at_every_precision(stored_as, tmp_path, broken_table, dtype, outtype):
    src = stored_as(dtype)
    out = convert(src, tmp_path / f"broken-{outtype}.gguf", ConvertOptions(outtype=outtype)).output
    report = validate(out, src, max_tokens=64)
    source = next(c for c in report.checks if c.name == SOURCE_CHECK)
    print(dtype, outtype, source.detail[:200])
    assert source.status == "fail" and not report.passed
    assert source.data["mean_kld"] > 100 * source.data["limit"]["max_mean_kld"], source.detail


@pytest.mark.parametrize(("dtype", "outtype"), PRECISIONS, ids=[f"{d}-{t}" for d, t in PRECISIONS])
def test_honest_files_pass_the_source_check_at_every_precision(stored_as, tmp_path, dtype, outtype):
    src = stored_as(dtype)
    out = convert(src, tmp_path / f"{outtype}.gguf", ConvertOptions(outtype=outtype)).output
    report = validate(out, src, max_tokens=64)
    source = next(c for c in report.checks if c.name == SOURCE_CHECK)
    print(dtype, outtype, source.detail)
    assert source.status == "pass", source.detail
    assert ("the file itself" in source.detail) == (outtype in ("f32", "bf16"))


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError], ids=["ctrl-c", "error"])
def test_the_float_conversion_is_deleted_after_use_and_after_an_interruption(
    tiny_dir, tmp_path, monkeypatch, interruption
):
    import tempfile
    from pathlib import Path

    from exaone_gguf.validate import fidelity

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # $TMPDIR for this test
    base = fidelity.float_conversion_logits(tiny_dir(FAMILY), None, [1, 2, 3], 1)
    assert base.logits.shape[0] == 3 and base.type_name == "F16" and list(tmp_path.iterdir()) == []

    seen: list[Path] = []

    def interrupted(path, **_):
        seen.append(Path(path))
        assert seen[0].stat().st_size > 0  # the conversion was written ...
        raise interruption()  # ... and llama.cpp is interrupted while it loads it

    monkeypatch.setattr(fidelity, "Runner", interrupted)
    with pytest.raises(interruption):
        fidelity.float_conversion_logits(tiny_dir(FAMILY), None, [1, 2, 3], 1)
    assert seen and not seen[0].exists() and list(tmp_path.iterdir()) == []
