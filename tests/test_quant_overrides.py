"""llama-quantize's per-tensor controls (--tensor-type, --output-tensor-type, --token-embedding-type, --pure,
--leave-output-tensor): our `quantize` and our one-pass `convert` write, tensor for tensor, the types and bytes
that the real llama-quantize binary (built by scripts/llama_tools.py) writes with the same flags."""

from __future__ import annotations

import subprocess

import pytest
from gguf import GGMLQuantizationType as T

from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.from_gguf import quantize_gguf
from exaone_gguf.convert.options import ConvertOptions
from exaone_gguf.errors import InputError
from exaone_gguf.gguf_io import read_gguf
from exaone_gguf.quantize.mixtures import TypeOverrides, parse_ggml_type, parse_tensor_types, plan_types

pytestmark = pytest.mark.slow  # converts and quantizes of tiny models

# (llama-quantize flags, the same as TypeOverrides, file type)
CASES = {
    "tensor-type": (
        ["--tensor-type", "attn_v=q8_0", "--tensor-type", r"BLK\.[01]\.ffn_down=q5_k", "--tensor-type", "ffn=q4_0"],
        TypeOverrides(tensor_types=parse_tensor_types(["attn_v=q8_0", r"BLK\.[01]\.ffn_down=q5_k", "ffn=q4_0"])),
        "q4_k_m",
    ),
    "output-tensor-type": (["--output-tensor-type", "q4_0"], TypeOverrides(output_tensor_type=T.Q4_0), "q4_k_m"),
    "token-embedding-type": (["--token-embedding-type", "Q8_0"], TypeOverrides(token_embedding_type=T.Q8_0), "q4_k_m"),
    "pure": (["--pure"], TypeOverrides(pure=True), "q4_k_m"),
    "leave-output-tensor": (["--leave-output-tensor"], TypeOverrides(leave_output_tensor=True), "q3_k_m"),
}


def tensors(path):
    f = read_gguf(path)
    return {t.name: (t.tensor_type, bytes(f.tensor_bytes(t))) for t in f.tensors}, f.get("general.file_type")


def llama_quantize_cli(tools, src, out, ftype, flags):
    cmd = [str(tools["llama-quantize"]), *flags, str(src), str(out), ftype.upper(), "1"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return out


# two untied families get every case; tied exaone4 (token_embd doubles as the output) the cases that touch it
RUNS = [(f, c) for f in ("exaone3", "exaone4-hybrid") for c in CASES] + [
    ("exaone4", c) for c in ("tensor-type", "output-tensor-type", "token-embedding-type", "pure")
]


@pytest.mark.parametrize("family, case", RUNS)
def test_same_bytes_as_llama_quantize(family, case, llama_tools, tiny_dir, tiny_gguf, tmp_path):
    flags, overrides, ftype = CASES[case]
    f32 = tiny_gguf(family, "f32")
    want, want_ft = tensors(llama_quantize_cli(llama_tools, f32, tmp_path / "llama.gguf", ftype, flags))
    default, _ = tensors(quantize_gguf(f32, tmp_path / "default.gguf", ftype).output)
    # the flag changes something, or the comparison below would prove nothing
    assert {n: q for n, (q, _) in want.items()} != {n: q for n, (q, _) in default.items()}

    ours_q = quantize_gguf(f32, tmp_path / "q.gguf", ftype, overrides=overrides).output
    ours_c = convert(tiny_dir(family), tmp_path / "c.gguf", ConvertOptions(outtype=ftype, overrides=overrides)).output
    for path in (ours_q, ours_c):
        got, ft = tensors(path)
        assert ft == want_ft
        assert set(got) == set(want)
        for name, (qtype, raw) in want.items():
            assert got[name][0] == qtype, f"{name}: {got[name][0].name} vs llama-quantize {qtype.name}"
            assert got[name][1] == raw, f"{name} ({qtype.name}): bytes differ from llama-quantize"


def test_rules_in_llama_cpp_order():
    shapes = [("token_embd.weight", (256, 100)), ("output.weight", (256, 100))] + [
        (f"blk.{i}.{n}.weight", (256, 256)) for i in range(4) for n in ("attn_v", "ffn_down", "attn_norm")
    ]
    shapes[-1] = ("blk.3.attn_norm.weight", (256,))
    base = plan_types(shapes, "q4_k_m", "exaone4", 4, n_gqa=2)
    # first matching pattern wins; a manual tensor skips the attn_v counter, so blk.3's attn_v is not promoted
    ov = TypeOverrides(tensor_types=parse_tensor_types([r"blk\.0\.attn_v=q8_0", "attn_v=q5_0", r"blk\.1\.=q6_k"]))
    got = plan_types(shapes, "q4_k_m", "exaone4", 4, n_gqa=2, overrides=ov)
    assert got["blk.0.attn_v.weight"] == T.Q8_0 and got["blk.1.attn_v.weight"] == T.Q5_0
    assert got["blk.1.ffn_down.weight"] == T.Q6_K
    ov = TypeOverrides(tensor_types=parse_tensor_types([r"blk\.[01]\.attn_v=q5_0"]))
    got = plan_types(shapes, "q4_k_m", "exaone4", 4, n_gqa=2, overrides=ov)
    assert base["blk.3.attn_v.weight"] == T.Q6_K  # the 4th attn_v: use_more_bits(3, 4)
    assert got["blk.3.attn_v.weight"] == T.Q4_K  # only the 2nd the mixture sees: use_more_bits(1, 4) is false
    pure = plan_types(shapes, "q4_k_m", "exaone4", 4, n_gqa=2, overrides=TypeOverrides(pure=True))
    assert pure["output.weight"] == T.Q4_K and pure["blk.0.ffn_down.weight"] == T.Q4_K
    assert pure["blk.3.attn_norm.weight"] == T.F32
    # a row that is not whole 256-blocks still falls back under --tensor-type
    odd = plan_types(
        [("blk.0.ffn_down.weight", (96, 8))],
        "q4_k_m",
        "exaone4",
        1,
        n_gqa=1,
        overrides=TypeOverrides(tensor_types=parse_tensor_types(["ffn_down=q6_k"])),
    )
    assert odd["blk.0.ffn_down.weight"] == T.Q8_0
    left = plan_types(shapes, "q4_k_m", "exaone4", 4, n_gqa=2, overrides=TypeOverrides(leave_output_tensor=True))
    assert left["output.weight"] == T.F32 and left["token_embd.weight"] == T.Q4_K


@pytest.mark.parametrize(
    "bad, match",
    [
        (["attn_v"], "write PATTERN=TYPE"),
        (["=q8_0"], "write PATTERN=TYPE"),
        (["attn_v="], "write PATTERN=TYPE"),
        (["attn_v=q9_9"], "not a tensor type this tool writes"),
        (["blk.(=q8_0"], "not a valid regular expression"),
    ],
)
def test_bad_tensor_type_refused(bad, match):
    with pytest.raises(InputError, match=match):
        parse_tensor_types(bad)


def test_bad_type_name_refused():
    with pytest.raises(InputError, match="--output-tensor-type 'iq9'"):
        parse_ggml_type("iq9", "--output-tensor-type")


def test_cli_bad_flag_exits_2_and_writes_nothing(tiny_gguf, tmp_path):
    import os
    import sys

    out = tmp_path / "q.gguf"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "exaone_gguf",
            "quantize",
            str(tiny_gguf("exaone4", "f32")),
            str(out),
            "q4_k_m",
            "--tensor-type",
            "attn_v",
        ],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert run.returncode == 2 and "write PATTERN=TYPE" in run.stderr
    assert not out.exists()


def test_cli_flags_reach_the_file(tiny_gguf, tmp_path):
    import os
    import sys

    out = tmp_path / "q.gguf"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "exaone_gguf",
            "quantize",
            str(tiny_gguf("exaone4", "f32")),
            str(out),
            "q4_k_m",
            "--tensor-type",
            "ffn_up=q8_0",
            "--output-tensor-type",
            "q5_0",
            "--token-embedding-type",
            "q4_0",
        ],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert run.returncode == 0, run.stderr
    got, _ = tensors(out)
    assert {q for n, (q, _) in got.items() if "ffn_up" in n} == {T.Q8_0}
    if "output.weight" in got:
        assert got["output.weight"][0] == T.Q5_0
    assert got["token_embd.weight"][0] == T.Q4_0
