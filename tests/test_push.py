"""push: a release folder into a model repository, against a loopback stand-in of the Hub's HTTP API (tests/
hub_standin.py) that huggingface_hub reaches through HF_ENDPOINT. A full push, a second push that sends nothing, a
push interrupted mid-file and resumed, a connection dropped mid-file, the refusals (token, namespace, name,
validation, checksums), the remote check after the upload, --dry-run, and convert --push in one command."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from helpers import cli_command, run_cli
from hub_standin import HubStandIn, Repo, User
from test_hub_source import hf_env, one_sentence, run

from exaone_gguf.publish.card import CardInfo, front_matter
from exaone_gguf.publish.manifest import MANIFEST_NAME, read_manifest, sha256_file, write_manifest

pytestmark = pytest.mark.slow  # the CLI in child processes over tiny models

REPO = "alice/tiny-exaone4-GGUF"


@pytest.fixture(scope="module")
def release(tiny_dir, tmp_path_factory) -> Path:
    """A real release of tiny EXAONE 4.0 (two quantized files, validated, with chart and card), made by the CLI."""
    out = tmp_path_factory.mktemp("release") / "out"
    res = run_cli(
        "convert",
        tiny_dir("exaone4"),
        "-o",
        f"{out}/",
        "--outtype",
        "q8_0,q4_k_m",
        "--validate",
        "--quantized-by",
        "Alice Kim",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture
def hub():
    with HubStandIn() as h:
        h.state.users |= {
            "alice-token": User("alice", orgs=["alice-lab"]),
            "alice-read-token": User("alice", role="read"),
        }
        h.state.repos["bob/tiny-exaone4-GGUF"] = Repo("bob", private=False)
        h.state.repos["alice/public-GGUF"] = Repo("alice", private=False)
        yield h


def env(tmp_path: Path, hub: HubStandIn, token: str | None = "alice-token") -> dict[str, str]:
    extra = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"} | ({"HF_TOKEN": token} if token else {})
    return hf_env(tmp_path, offline=False, **extra)


def push(release: Path, tmp_path: Path, hub: HubStandIn, *flags: str, repo: str = REPO, token="alice-token"):
    res = run(["push", str(release), repo, "--json", *flags], env(tmp_path, hub, token))
    out = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else None
    return res, out


def lfs_oid(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def puts(log, since: int = 0) -> list[str]:
    """The LFS objects whose upload the stand-in saw begin, in order."""
    return [p.removeprefix("/lfs-upload/") for m, p, _ in log[since:] if m == "PUT"]


def release_names(release: Path) -> list[str]:
    return [*read_manifest(release / MANIFEST_NAME), MANIFEST_NAME]


def test_full_push_then_nothing_to_send(release, tmp_path, hub):
    res, out = push(release, tmp_path, hub)
    assert res.returncode == 0, res.stderr[-3000:]
    repo = hub.state.repos[REPO]
    names = release_names(release)
    assert len(names) == 9  # 2 GGUFs, their Modelfiles and reports, the chart, the card, SHA256SUMS
    assert sorted(repo.files) == sorted([".gitattributes", *names])
    for name in names:  # every byte, and the large files stored through LFS
        assert repo.files[name] == (release / name).read_bytes(), name
        assert (name in repo.lfs) == name.endswith((".gguf", ".png")), name
    assert repo.commits[1:] == ["Upload out with exaone-gguf (9 of 9 files)"]  # one commit adds the whole release
    assert out["url"] == f"{hub.url}/{REPO}" and out["created"] and out["validated"]
    assert {f["name"]: (f["size"], f["status"]) for f in out["files"]} == {
        n: ((release / n).stat().st_size, "sent") for n in names
    }
    assert out["bytes_sent"] == sum((release / n).stat().st_size for n in names)
    assert hub.state.cards == [(release / "README.md").read_text()]  # the card went through the Hub's YAML check
    assert "pushed 9 of 9 files" in res.stderr and REPO in res.stderr

    seen = len(hub.state.log)
    res, again = push(release, tmp_path, hub)
    assert res.returncode == 0, res.stderr[-3000:]
    assert hub.state.writes(seen) == []  # no create, preupload, LFS batch, upload or commit: only reads
    assert {f["status"] for f in again["files"]} == {"already there"} and again["bytes_sent"] == 0
    assert len(repo.commits) == 2 and "is up to date" in res.stderr


def test_interrupted_mid_file_then_resumed(release, tmp_path, hub):
    """Ctrl-C while the second GGUF is half sent: nothing is committed; the rerun sends that file and what followed
    it, not the GGUF already stored whole, and commits the release."""
    ggufs = sorted(n for n in release_names(release) if n.endswith(".gguf"))
    first, victim = lfs_oid(release / ggufs[0]), lfs_oid(release / ggufs[1])
    halfway = hub.state.interrupt[victim] = threading.Event()
    proc = subprocess.Popen(
        cli_command("push", release, REPO),
        env=env(tmp_path, hub),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal, even where this runs in a background job that ignores SIGINT (the ignored
        # disposition would be inherited, and Python then installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert halfway.wait(120), proc.kill() or proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert f"run `exaone-gguf push {release} {REPO}` again" in stderr
    repo = hub.state.repos[REPO]
    assert sorted(repo.files) == [".gitattributes"] and len(repo.commits) == 1  # created, nothing committed
    assert first in hub.state.objects and victim not in hub.state.objects
    stored = set(hub.state.objects)

    del hub.state.interrupt[victim]
    seen = len(hub.state.log)
    res, out = push(release, tmp_path, hub)
    assert res.returncode == 0, res.stderr[-3000:]
    lfs_names = [n for n in release_names(release) if n.endswith((".gguf", ".png"))]
    resent = puts(hub.state.log, seen)
    assert victim in resent and first not in resent
    assert sorted(resent) == sorted(lfs_oid(release / n) for n in lfs_names if lfs_oid(release / n) not in stored)
    assert all(repo.files[n] == (release / n).read_bytes() for n in release_names(release))
    assert len(repo.commits) == 2


def test_connection_dropped_mid_file(release, tmp_path, hub):
    """The Hub's end goes away halfway through a GGUF: huggingface_hub sends it again from its start, and the file
    the Hub keeps is whole."""
    name = sorted(n for n in release_names(release) if n.endswith(".gguf"))[1]
    victim = lfs_oid(release / name)
    hub.state.drop_once.add(victim)
    res, out = push(release, tmp_path, hub)
    assert res.returncode == 0, res.stderr[-3000:]
    attempts = [n for m, p, n in hub.state.log if m == "PUT" and p.endswith(victim)]
    size = (release / name).stat().st_size
    assert len(attempts) == 2 and attempts[0] < size and attempts[1] == size
    assert hub.state.repos[REPO].files[name] == (release / name).read_bytes()


@pytest.mark.parametrize(
    "case, repo, token, flags, words",
    [
        ("no token", REPO, None, [], "no Hugging Face token found"),
        ("refused token", REPO, "hf_not_a_real_token", [], "rejected the Hugging Face token (HTTP 401)"),
        ("read-only token", REPO, "alice-read-token", [], "read-only"),
        ("someone else's repository", "bob/tiny-exaone4-GGUF", "alice-token", [], "the namespace bob is neither"),
        ("a name the Hub refuses", "alice/refused-name", "alice-token", [], "HTTP 400 (Invalid repo name"),
        ("--private on a public repository", "alice/public-GGUF", "alice-token", ["--private"], "exists and is public"),
    ],
)
def test_refusals_send_and_create_nothing(release, tmp_path, hub, case, repo, token, flags, words):
    hub.state.refuse_names.add("refused-name")
    before = {r: (sorted(v.files), len(v.commits)) for r, v in hub.state.repos.items()}
    res, _ = push(release, tmp_path, hub, *flags, repo=repo, token=token)
    assert res.returncode == 2, (case, res.stderr[-3000:])
    body = one_sentence(res.stderr)
    assert body.startswith(f"{repo}: ") and words in body, (case, body)
    assert "Traceback" not in res.stderr
    assert {r: (sorted(v.files), len(v.commits)) for r, v in hub.state.repos.items()} == before  # nothing created
    assert [w for w in hub.state.writes() if w[1] != "/api/repos/create"] == []  # nothing sent
    assert not hub.state.objects


def fake_release(folder: Path, report: dict | None) -> Path:
    """A small release folder as the release writer lays it out (the writer is not under test here): a GGUF-named
    file, its Modelfile, its validation report when given, a card and SHA256SUMS."""
    folder.mkdir()
    gguf = folder / "Tiny-1M-Q8_0.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 40)
    (folder / "Tiny-1M-Q8_0.Modelfile").write_text("FROM ./Tiny-1M-Q8_0.gguf\n")
    (folder / "README.md").write_text("---\nlibrary_name: gguf\n---\n# Tiny\n")
    others = [folder / "Tiny-1M-Q8_0.Modelfile", folder / "README.md"]
    if report is not None:
        (folder / "Tiny-1M-Q8_0.validation.json").write_text(json.dumps(report))
        others.append(folder / "Tiny-1M-Q8_0.validation.json")
    write_manifest(folder, {gguf: sha256_file(gguf)}, [gguf], others)
    return folder


@pytest.mark.parametrize(
    "report, code, words",
    [({"passed": False, "checks": []}, 1, "record a failed validation"), (None, 2, "was never validated")],
)
def test_unproven_release_refused_unless_forced(tmp_path, hub, report, code, words):
    folder = fake_release(tmp_path / "rel", report)
    res, _ = push(folder, tmp_path, hub)
    assert res.returncode == code, res.stderr[-3000:]
    assert words in " ".join(res.stderr.split()) and "--force" in res.stderr
    assert hub.state.log == [] and REPO not in hub.state.repos  # refused before the Hub is asked anything

    res, out = push(folder, tmp_path, hub, "--force")
    assert res.returncode == 0, res.stderr[-3000:]
    assert out["validated"] is False and "did not pass validation" in res.stderr
    assert sorted(hub.state.repos[REPO].files) == sorted([".gitattributes", *release_names(folder)])


def flip_last_bit(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit, same size


@pytest.mark.parametrize(
    "damage, culprit, words",
    [
        (flip_last_bit, "Tiny-1M-Q8_0.gguf", "does not match its SHA-256 in SHA256SUMS"),
        (Path.unlink, "Tiny-1M-Q8_0.Modelfile", "listed in SHA256SUMS but missing"),
        (Path.unlink, "SHA256SUMS", "has no SHA256SUMS, so it is not a release folder"),
    ],
)
def test_release_not_as_its_manifest_says_is_refused(tmp_path, hub, damage, culprit, words):
    folder = fake_release(tmp_path / "rel", {"passed": True})
    damage(folder / culprit)
    res, _ = push(folder, tmp_path, hub)
    assert res.returncode == 2
    body = one_sentence(res.stderr)
    where = folder if culprit == MANIFEST_NAME else folder / culprit
    assert body.startswith(f"{where}: {words}"), body
    assert hub.state.writes() == [] and REPO not in hub.state.repos


def test_remote_file_differing_after_the_upload_fails(tmp_path, hub):
    """The Hub keeps a damaged copy (a stand-in fault): the listing read back after the commit catches it."""
    folder = fake_release(tmp_path / "rel", {"passed": True})
    hub.state.tamper_after_commit["Tiny-1M-Q8_0.gguf"] = b"GGUF" + bytes(100)
    res, _ = push(folder, tmp_path, hub)
    assert res.returncode == 2
    body = one_sentence(res.stderr)
    assert "after the upload the Hub's Tiny-1M-Q8_0.gguf differs from the local file" in body
    hub.state.tamper_after_commit.clear()
    res, out = push(folder, tmp_path, hub)  # the rerun sees the difference and sends that file again
    assert res.returncode == 0, res.stderr[-3000:]
    assert [f["name"] for f in out["files"] if f["status"] == "sent"] == ["Tiny-1M-Q8_0.gguf"]


def test_dry_run_lists_and_sends_nothing(release, tmp_path, hub):
    res, out = push(release, tmp_path, hub, "--dry-run")
    assert res.returncode == 0, res.stderr[-3000:]
    assert hub.state.writes() == [] and REPO not in hub.state.repos
    assert out["dry_run"] and out["created"]
    assert [(f["name"], f["size"], f["status"]) for f in out["files"]] == [
        (n, (release / n).stat().st_size, "to send") for n in release_names(release)
    ]
    assert "dry run: would create the repository and send 9 file(s)" in " ".join(res.stderr.split())

    push(release, tmp_path, hub)
    (tmp_path / "more").mkdir()
    changed = shutil.copytree(release, tmp_path / "more" / "out")
    card = changed / "README.md"
    card.write_text(card.read_text() + "\nOne more line.\n")
    lines = (changed / MANIFEST_NAME).read_text().replace(sha256_file(release / "README.md"), sha256_file(card))
    (changed / MANIFEST_NAME).write_text(lines)
    seen = len(hub.state.log)
    res, out = push(changed, tmp_path, hub, "--dry-run")
    assert res.returncode == 0, res.stderr[-3000:]
    assert hub.state.writes(seen) == []
    assert sorted(f["name"] for f in out["files"] if f["status"] == "to send") == ["README.md", MANIFEST_NAME]


def test_card_front_matter_key_by_key(release):
    meta = yaml.safe_load((release / "README.md").read_text().split("---")[1])
    assert meta == {
        "license": "apache-2.0",
        "base_model": "exaone-gguf/tiny-exaone4",
        "base_model_relation": "quantized",
        "language": ["en", "ko"],
        "library_name": "gguf",
        "pipeline_tag": "text-generation",
        "tags": ["exaone-gguf-tiny", "gguf", "llama.cpp", "exaone"],  # the source card's own tags first
        "quantized_by": "Alice Kim",
    }
    bare = yaml.safe_load(front_matter(CardInfo("T", "tiny-exaone4")).split("---")[1])
    assert "base_model" not in bare and "base_model_relation" not in bare and "quantized_by" not in bare


def test_convert_push_in_one_command(tiny_dir, tmp_path, hub):
    """convert ... -o OUT_DIR/ --push: validated, then pushed; the card credits --quantized-by."""
    out = tmp_path / "rel"
    res = run(
        ["convert", str(tiny_dir("exaone4")), "-o", f"{out}/", "--outtype", "q8_0", "--push", REPO, "--private"]
        + ["--quantized-by", "alice", "--json"],
        env(tmp_path, hub),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    [line] = res.stdout.strip().splitlines()  # one JSON object: the release and the push
    result = json.loads(line)
    repo = hub.state.repos[REPO]
    assert repo.private and result["push"]["url"] == f"{hub.url}/{REPO}"
    [variant] = result["variants"]
    assert variant["passed"] is True  # --push validated the release
    names = release_names(out)
    assert Path(variant["report"]).name in names and {f["name"] for f in result["push"]["files"]} == set(names)
    assert all(repo.files[n] == (out / n).read_bytes() for n in names)
    assert yaml.safe_load(repo.files["README.md"].decode().split("---")[1])["quantized_by"] == "alice"


def test_convert_push_checks_the_token_before_converting(tiny_dir, tmp_path, hub):
    out = tmp_path / "rel"
    res = run(
        ["convert", str(tiny_dir("exaone4")), "-o", f"{out}/", "--outtype", "q8_0", "--push", REPO],
        env(tmp_path, hub, token="hf_not_a_real_token"),
    )
    assert res.returncode == 2
    assert "rejected the Hugging Face token (HTTP 401)" in one_sentence(res.stderr)
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["-o", "one.gguf", "--push", REPO], "--push: applies to a release folder"),
        (["-o", "one.gguf", "--quantized-by", "alice"], "--quantized-by: applies to a release folder"),
        (["-o", "out/", "--private"], "--private: applies to the repository that --push REPO_ID creates"),
    ],
)
def test_convert_push_flags_need_a_release(tiny_dir, tmp_path, hub, flags, words):
    res = run(["convert", str(tiny_dir("exaone4")), "--outtype", "q8_0", *flags], env(tmp_path, hub), cwd=tmp_path)
    assert res.returncode == 2 and one_sentence(res.stderr).startswith(words)
    assert hub.state.log == [] and sorted(p.name for p in tmp_path.iterdir()) == []
