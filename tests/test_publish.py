"""publish: five variants from one read, each byte-identical to a single convert, validated, with card,
Modelfiles and manifest; and the refusals and cleanup around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import parse_modelfile, verify_manifest
from typer.testing import CliRunner

from exaone_gguf.cli import app
from exaone_gguf.convert.driver import convert
from exaone_gguf.convert.options import ConvertOptions, parse_outtypes
from exaone_gguf.errors import InputError
from exaone_gguf.publish import publish

pytestmark = pytest.mark.slow  # validate --reference (numpy forwards and llama.cpp runs)

TYPES = ["bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"]


@pytest.fixture(scope="module")
def published(tiny_dir, tmp_path_factory):
    src = tiny_dir("exaone4")
    out = tmp_path_factory.mktemp("pub") / "out"
    return src, out, publish(src, out, ConvertOptions(outtype=TYPES, validate=True))


def test_every_variant_equals_a_single_convert(published, tmp_path):
    src, out, result = published
    assert [v.outtype for v in result.variants] == [t.upper() for t in TYPES]
    for t, v in zip(TYPES, result.variants):
        single = tmp_path / f"{t}.gguf"
        convert(src, single, ConvertOptions(outtype=t))
        assert v.files == [out / f"tiny-exaone4-29M-{t.upper()}.gguf"]
        assert v.files[0].read_bytes() == single.read_bytes(), t


def test_each_variant_validated_and_reported(published):
    _, out, result = published
    for v in result.variants:
        report = json.loads(v.report.read_text())
        assert v.report.parent == out and report["passed"] is True
        assert report["metrics"]["mean_kld"] == v.mean_kld and v.mean_kld >= 0
        assert 0 <= v.same_top1 <= 100
    klds = {v.outtype: v.mean_kld for v in result.variants}
    assert klds["BF16"] < klds["Q8_0"] < klds["Q4_K_M"]  # the figures measure the files, not a constant


def test_manifest_needs_the_digests_taken_while_writing(tiny_dir, tmp_path):
    """write_variants hashes every byte as it writes (the digests equal a fresh read); a GGUF whose streamed
    digest is missing is an error, never a silent second read."""
    from exaone_gguf.convert.multiwrite import assign_paths, plan_variants, write_variants
    from exaone_gguf.families import load_checkpoint
    from exaone_gguf.publish.manifest import sha256_file, write_manifest

    ckpt = load_checkpoint(tiny_dir("exaone4"))
    variants = plan_variants(ckpt, ["q8_0", "bf16"])
    for v in variants:
        assign_paths(v, tmp_path / f"m-{v.outtype}.gguf", max_tensors=20)
    write_variants(variants, hash=True)
    ggufs = [p for v in variants for p in v.paths]
    streamed = {p: d for v in variants for p, d in v.sha256.items()}
    assert len(ggufs) > 2 and sorted(streamed) == sorted(ggufs)
    assert all(streamed[p] == sha256_file(p) for p in ggufs)
    note = tmp_path / "note.txt"
    note.write_text("hashed when the manifest is written\n")
    manifest = write_manifest(tmp_path, streamed, ggufs, [note])
    assert verify_manifest(manifest) == [] and len(manifest.read_text().splitlines()) == len(ggufs) + 1
    victim = ggufs[1]
    del streamed[victim]
    with pytest.raises(RuntimeError, match=f"no digest was taken while writing {victim.name}"):
        write_manifest(tmp_path, streamed, ggufs, [note])


def test_card(published):
    _, out, result = published
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert 'license: "apache-2.0"' in front and 'base_model: "exaone-gguf/tiny-exaone4"' in front
    assert '- "ko"' in front and '- "gguf"' in front
    for v in result.variants:
        row = next(line for line in card.splitlines() if line.startswith(f"| [{v.files[0].name}]"))
        assert f"| {v.outtype} |" in row and f"{v.mean_kld:.5f}" in row and f"{v.same_top1:.1f}%" in row
        assert f"{v.bits_per_weight:.2f}" in row and "[passed]" in row
    assert "llama-server" in card and "--jinja" in card and "enable_thinking" in card
    assert "llama_cpp import Llama" in card and "ollama create" in card


def test_chart_shows_the_table(published):
    """The card shows a PNG of mean KLD and same top-1 against bits per weight whose points are the table's."""
    from PIL import Image

    from exaone_gguf.publish.chart import POINTS_KEY

    _, out, result = published
    card = (out / "README.md").read_text()
    png = out / "tiny-exaone4-29M-quality.png"
    assert (
        result.chart == png
        and f"![Mean KL divergence and same top-1 against bits per weight, one point per file]({png.name})" in card
    )
    assert (
        card.index("| File | Type |") < card.index(f"]({png.name})") < card.index("## Usage")
    )  # right after the table
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 600
        shown = json.loads(im.text[POINTS_KEY])
    assert shown == result.chart_shown
    assert [a["xlabel"] for a in shown["axes"]] == ["bits per weight"] * 2
    assert "KL divergence" in shown["axes"][0]["ylabel"] and "top-1" in shown["axes"][1]["ylabel"]
    points = shown["points"]
    assert [p["type"] for p in points] == [v.outtype for v in result.variants]  # one point per variant
    for p, v in zip(points, result.variants):
        assert (p["bits_per_weight"], p["mean_kld"], p["same_top1"]) == (v.bits_per_weight, v.mean_kld, v.same_top1)
        row = next(line for line in card.splitlines() if line.startswith(f"| [{v.files[0].name}]"))
        cells = [c.strip() for c in row.split("|")]
        assert cells[4:7] == [f"{p['bits_per_weight']:.2f}", f"{p['mean_kld']:.5f}", f"{p['same_top1']:.1f}%"]


def test_chart_only_with_figures(tmp_path):
    """No chart without validation figures; a variant without figures is left out of it, not drawn at zero."""
    from exaone_gguf.publish.card import FileRow
    from exaone_gguf.publish.chart import write_chart

    rows = [
        FileRow("BF16", ["a.gguf"], 10, 16.0, mean_kld=1e-5, same_top1=100.0),
        FileRow("Q8_0", ["b.gguf"], 5, 8.5),  # validation failed to load the file: no metrics
        FileRow("Q4_K_M", ["c.gguf"], 3, 4.9, mean_kld=0.2, same_top1=80.0),
    ]
    shown = write_chart(rows, tmp_path / "q.png", "t")
    assert [p["type"] for p in shown["points"]] == ["BF16", "Q4_K_M"] and shown["axes"][0]["yscale"] == "log"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.png"]
    with pytest.raises(ValueError, match="no validated variant"):
        write_chart(rows[1:2], tmp_path / "none.png", "t")
    assert not (tmp_path / "none.png").exists()


def test_no_chart_without_validate(tiny_dir, tmp_path):
    result = publish(tiny_dir("exaone4"), tmp_path / "out", ConvertOptions(outtype=["q8_0"]))
    assert result.chart is None and not list((tmp_path / "out").glob("*.png"))
    assert ".png" not in (tmp_path / "out" / "README.md").read_text()


def test_modelfiles(published):
    _, out, result = published
    for v in result.variants:
        mf = parse_modelfile(v.modelfile.read_text())
        assert mf["FROM"] == f"./{v.files[0].name}"
        assert ("stop", '"[|endofturn|]"') in mf["PARAMETER"] and ("temperature", "0.6") in mf["PARAMETER"]
        assert "[|assistant|]" in mf["TEMPLATE"] and mf["LICENSE"] == "apache-2.0"


def test_manifest_covers_outputs_and_catches_tampering(published, tmp_path):
    _, out, result = published
    listed = {line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    on_disk = {p.name for p in out.iterdir()} - {"SHA256SUMS"}
    assert listed == on_disk and len(listed) == 5 * 3 + 2  # gguf, Modelfile, report per variant; card, chart
    assert verify_manifest(out / "SHA256SUMS") == []
    # a copy with one flipped byte must be caught
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in listed | {"SHA256SUMS"}:
        (copy / name).symlink_to(out / name)
    victim = result.variants[1].modelfile.name
    (copy / victim).unlink()
    (copy / victim).write_text((out / victim).read_text().replace("0.6", "0.7"))
    assert verify_manifest(copy / "SHA256SUMS") == [victim]
    (copy / "SHA256SUMS").write_text("not a manifest line\n")
    with pytest.raises(InputError, match="SHA256  NAME"):
        verify_manifest(copy / "SHA256SUMS")


def test_refusals(tiny_dir, tmp_path, published):
    src, out, _ = published
    with pytest.raises(InputError, match="already exists"):
        publish(src, out, ConvertOptions(outtype=["q8_0"]))
    with pytest.raises(InputError, match="listed twice"):
        parse_outtypes("q8_0,Q8_0")
    with pytest.raises(InputError):
        parse_outtypes("q8_0,q9_9")
    with pytest.raises(InputError, match="inside the source"):
        publish(src, src / "out", ConvertOptions(outtype=["q8_0"]))
    with pytest.raises(InputError, match="same file"):  # auto resolves to bf16 on a BF16 source
        publish(src, tmp_path / "dup", ConvertOptions(outtype=["auto", "bf16"]))


def test_failure_leaves_nothing(tiny_dir, tmp_path):
    src = tiny_dir("exaone4")
    out = tmp_path / "out"
    out.mkdir()
    # the second variant's partial file cannot be created: the whole run must fail and leave no file
    (out / "tiny-exaone4-29M-Q4_K_M.gguf.partial").mkdir()
    with pytest.raises(IsADirectoryError):
        publish(src, out, ConvertOptions(outtype=["q8_0", "q4_k_m"]))
    assert [p.name for p in out.iterdir()] == ["tiny-exaone4-29M-Q4_K_M.gguf.partial"]


def test_cli_several_types(tiny_dir, tmp_path):
    src = tiny_dir("exaone4")
    res = CliRunner().invoke(app, ["convert", str(src), "--outtype", "q8_0,q4_k_m", "-o", f"{tmp_path}/pub/", "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout.strip().splitlines()[-1])
    assert [Path(v["files"][0]).name for v in obj["variants"]] == [
        "tiny-exaone4-29M-Q8_0.gguf",
        "tiny-exaone4-29M-Q4_K_M.gguf",
    ]
    assert Path(obj["manifest"]).is_file() and Path(obj["card"]).is_file()
    res = CliRunner().invoke(app, ["convert", str(src), "--outtype", "q8_0,q4_k_m", "-o", f"{tmp_path}/pub/"])
    assert res.exit_code == 2 and "already exists" in res.output


def test_cli_one_type_into_a_directory_and_single_file_validate(tiny_dir, tmp_path):
    src = tiny_dir("exaone4")
    res = CliRunner().invoke(app, ["convert", str(src), "--outtype", "q8_0", "-o", f"{tmp_path}/one/", "--validate"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    stem = "tiny-exaone4-29M-Q8_0"
    assert names == [
        "README.md",
        "SHA256SUMS",
        f"{stem}.Modelfile",
        f"{stem}.gguf",
        f"{stem}.validation.json",
        "tiny-exaone4-29M-quality.png",
    ]
    res = CliRunner().invoke(
        app, ["convert", str(src), "--outtype", "q8_0", "-o", str(tmp_path / "x.gguf"), "--validate"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "x.validation.json").read_text())["passed"] is True
