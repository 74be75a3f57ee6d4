"""push: a release folder (`convert -o OUT_DIR/`) into a model repository on the Hugging Face Hub, only when it is
proven.

Before anything leaves the machine, every file listed in `SHA256SUMS` is hashed against it, and every GGUF (and the
vision projector) must have a validation report in the folder that passed (`{stem}.validation.json`, written by
`convert --validate`); a failed report refuses the push (exit 1), a missing one too (exit 2), unless `force`. Then the
token is checked where huggingface_hub looks for it (HF_TOKEN, the saved login) with `whoami`, and so is the
namespace: the user's own, or one of their organisations. The repository is created when missing (`private`).

What is sent is what the repository lacks: a file whose remote size and hash (the LFS SHA-256, or git's blob id for
a small file) equal the local ones stays. Large files are uploaded one by one before a single commit that adds
every file at once, so a visitor never sees half a release. An upload cut short (network, Ctrl-C) leaves at most
uncommitted objects on the Hub: run the same push again and the Hub's storage reports the files it already holds
whole (LFS batch, or Xet's chunk store), so only the rest is sent. After the commit the remote listing is read back
and every file's size and hash compared with the local one.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from exaone_gguf.checkpoint.hub import is_repo_id
from exaone_gguf.errors import InputError, ValidationFailed
from exaone_gguf.publish import report_path
from exaone_gguf.publish.manifest import MANIFEST_NAME, read_manifest, sha256_file

__all__ = ["push", "check_access", "release_files", "again", "PushResult", "ReleaseFile"]


def again(folder: Path | str, repo_id: str) -> str:
    return f"run `exaone-gguf push {folder} {repo_id}` again: it sends only what is missing"


@dataclass
class ReleaseFile:
    name: str  # its path in the folder and in the repository
    size: int
    sha256: str
    status: str = "to send"  # "to send" (planned, or a dry run), "sent", "already there"


@dataclass
class PushResult:
    repo_id: str
    url: str
    files: list[ReleaseFile]
    dry_run: bool = False
    created: bool = False  # the repository did not exist (a dry run: would be created)
    validated: bool = True  # every file's validation passed (False: pushed with --force)
    unlisted: list[str] = field(default_factory=list)  # files in the folder but not in SHA256SUMS: not pushed
    remote_only: list[str] = field(default_factory=list)  # files in the repository that the release lacks: left
    seconds: float = 0.0

    @property
    def to_send(self) -> list[ReleaseFile]:
        return [f for f in self.files if f.status != "already there"]

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["files"] = [dict(f.__dict__) for f in self.files]
        d["seconds"] = round(self.seconds, 3)
        d["bytes_sent"] = sum(f.size for f in self.files if f.status == "sent")
        return d


@dataclass
class _Access:
    api: object  # huggingface_hub.HfApi, with the token that was checked
    exists: bool  # the repository exists (and the token may see it)


def release_files(release_dir: Path | str) -> tuple[list[ReleaseFile], list[str]]:
    """The files a push sends (those SHA256SUMS lists, with their listed digests, and SHA256SUMS itself) and the
    folder's other files (not sent)."""
    folder = Path(release_dir)
    manifest = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; give the release folder that `convert -o OUT_DIR/` wrote.")
    if not manifest.is_file():
        raise InputError(
            f"{folder}: has no {MANIFEST_NAME}, so it is not a release folder; write one with `exaone-gguf convert "
            "SRC -o OUT_DIR/ --outtype TYPES --validate`."
        )
    digests = read_manifest(manifest)
    missing = [n for n in digests if not (folder / n).is_file()]
    if missing:
        raise InputError(
            f"{folder / missing[0]}: listed in {MANIFEST_NAME} but missing; restore it or remake the release."
        )
    files = [ReleaseFile(n, (folder / n).stat().st_size, d) for n, d in digests.items()]
    files.append(ReleaseFile(MANIFEST_NAME, manifest.stat().st_size, sha256_file(manifest)))
    listed = {f.name for f in files}
    unlisted = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return files, [n for n in unlisted if n not in listed]


def _check_validated(folder: Path, names: list[str], force: bool) -> bool:
    """True when every GGUF's report is in the release and passed; otherwise refuse, unless `force` (then False)."""
    failed, unvalidated = [], []
    for report in dict.fromkeys(report_path(folder / n).name for n in names if n.endswith(".gguf")):
        if report not in names:
            unvalidated.append(report)
            continue
        try:
            passed = json.loads((folder / report).read_text(encoding="utf-8")).get("passed")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise InputError(f"{folder / report}: is not a validation report (JSON); remake the release.") from None
        if passed is not True:
            failed.append(report)
    if force or not (failed or unvalidated):
        return not (failed or unvalidated)
    if failed:
        raise ValidationFailed(
            f"{folder}: {', '.join(failed)} record a failed validation, so nothing was pushed; fix the release, or "
            "pass --force to push it anyway."
        )
    raise InputError(
        f"{folder}: was never validated (no {', '.join(unvalidated)} in {MANIFEST_NAME}), so nothing was pushed; make "
        "the release with --validate, or pass --force to push it anyway."
    )


def _check_local(folder: Path, files: list[ReleaseFile], on_stage, progress) -> None:
    """Hash every listed file against SHA256SUMS (a file changed since the release was written is never sent)."""
    on_stage(f"checking {MANIFEST_NAME}", sum(f.size for f in files[:-1]))
    for f in files[:-1]:  # the last is SHA256SUMS itself, hashed when listed
        if sha256_file(folder / f.name, progress=lambda n, name=f.name: progress(name, n)) != f.sha256:
            raise InputError(
                f"{folder / f.name}: does not match its SHA-256 in {MANIFEST_NAME} (changed or damaged since the "
                "release was written), so nothing was pushed; remake the release."
            )


def _brief(text: object) -> str:
    """The first line of a server's or library's message, without a closing period (quoted inside a sentence)."""
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line.rstrip(". ")[:200].replace(". ", "; ")


@contextmanager
def _hub(repo_id: str, doing: str, again: str = "nothing was pushed", fix: str = "") -> Iterator[None]:
    """Turn the Hub's refusals and a lost connection during `doing` into one sentence (exit 2)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status == 401:
            raise InputError(
                f"{repo_id}: the Hub rejected the Hugging Face token (HTTP 401) while {doing}, so {again}; set a valid "
                "write token in HF_TOKEN or log in again with `hf auth login`."
            ) from None
        if status == 403:
            raise InputError(
                f"{repo_id}: the token may not write to this repository (HTTP 403) while {doing}, so {again}; use a "
                "write token of its owner or of a member of its organisation."
            ) from None
        why = _brief(getattr(e, "server_message", None) or e)
        raise InputError(f"{repo_id}: the Hub answered HTTP {status} ({why}) while {doing}, so {again}{fix}.") from None
    except (InputError, ValidationFailed):
        raise
    except Exception as e:  # a dropped connection, a timeout: whatever the HTTP client of this huggingface_hub raises
        cause = e.__cause__ or e
        why = _brief(f"{type(cause).__name__}: {cause}")
        raise InputError(f"{repo_id}: {doing} failed ({why}), so {again}.") from e


def check_access(repo_id: str, private: bool = False) -> _Access:
    """The token huggingface_hub finds (HF_TOKEN, the saved login) may write to `repo_id`: it is accepted, not
    read-only, and the repo's namespace is its user's or one of their organisations'; an existing repository is
    not public when `private` is asked. Nothing is created. Raises InputError (exit 2) with one sentence."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import RepositoryNotFoundError

    if not is_repo_id(repo_id):
        raise InputError(
            f"{repo_id}: not a Hub repository id; write OWNER/NAME (letters, digits, '-', '_', '.', no '--' or '..', "
            "at most 96 characters each)."
        )
    token = get_token()
    if token is None:
        raise InputError(
            f"{repo_id}: no Hugging Face token found, so nothing was pushed; set HF_TOKEN or log in with "
            "`hf auth login` (a token with write access)."
        )
    api = HfApi(token=token)
    with _hub(repo_id, "checking the token"):
        me = api.whoami()
    user = me.get("name", "?")
    role = (me.get("auth", {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise InputError(
            f"{repo_id}: the Hugging Face token of {user} is read-only, so nothing was pushed; create a write token "
            "and set it in HF_TOKEN or with `hf auth login`."
        )
    owner = repo_id.split("/")[0]
    orgs = [o.get("name") for o in me.get("orgs", [])]
    if owner != user and owner not in orgs:
        raise InputError(
            f"{repo_id}: the namespace {owner} is neither the token's user ({user}) nor one of their organisations, so "
            f"nothing was pushed; push to {user}/{repo_id.split('/')[1]}, or use a token of {owner} (or of a member)."
        )
    with _hub(repo_id, "reading the repository"):
        try:
            info = api.repo_info(repo_id)
        except RepositoryNotFoundError:
            return _Access(api, exists=False)
    if private and not info.private:
        raise InputError(
            f"{repo_id}: exists and is public, and --private does not change an existing repository, so nothing was "
            "pushed; make it private on the Hub first, or leave out --private."
        )
    return _Access(api, exists=True)


def _remote_files(api, repo_id: str, doing: str, rerun: str | None = None) -> dict:
    """{path: huggingface_hub.hf_api.RepoFile} of the repository's main branch."""
    from huggingface_hub.hf_api import RepoFile

    with _hub(repo_id, doing, rerun or "nothing was pushed"):
        return {e.path: e for e in api.list_repo_tree(repo_id, recursive=True) if isinstance(e, RepoFile)}


def _same(local: Path, f: ReleaseFile, remote) -> bool:
    """The remote file has the local file's size and hash: the LFS SHA-256, or git's blob id of a small file."""
    from huggingface_hub.utils.sha import git_hash

    if remote is None or remote.size != f.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == f.sha256
    return remote.blob_id == git_hash(local.read_bytes())


def push(
    release_dir: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    force: bool = False,
    on_stage: Callable[[str, int], None] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> PushResult:
    """Push the release in `release_dir` to the model repository `repo_id` (see module doc). `on_stage(label, total
    bytes)` starts a step (checking, uploading); `progress(file name, bytes)` advances it. A dry run does every check
    (files, validation, token, repository) and marks what would be sent, sending and creating nothing."""
    start = time.perf_counter()
    on_stage = on_stage or (lambda label, total: None)
    progress = progress or (lambda name, n: None)
    folder = Path(release_dir)
    files, unlisted = release_files(folder)
    validated = _check_validated(folder, [f.name for f in files], force)
    access = check_access(repo_id, private)
    _check_local(folder, files, on_stage, progress)
    api = access.api
    remote = _remote_files(api, repo_id, "listing the repository") if access.exists else {}
    for f in files:
        f.status = "already there" if _same(folder / f.name, f, remote.get(f.name)) else "to send"
    listed = {f.name for f in files}
    result = PushResult(
        repo_id,
        f"{api.endpoint}/{repo_id}",
        files,
        dry_run=dry_run,
        created=not access.exists,
        validated=validated,
        unlisted=unlisted,
        remote_only=sorted(p for p in remote if p not in listed and p != ".gitattributes"),
    )
    if dry_run or not result.to_send:
        result.seconds = time.perf_counter() - start
        return result

    from huggingface_hub import CommitOperationAdd

    if not access.exists:
        with _hub(
            repo_id, "creating the repository", fix="; choose another repository name if the Hub refuses this one"
        ):
            api.create_repo(repo_id, private=private, exist_ok=True)
    todo = result.to_send
    on_stage(f"uploading to {repo_id}", sum(f.size for f in todo))
    ops = [CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=folder / f.name) for f in todo]
    with _hub(repo_id, "uploading", again(folder, repo_id)):
        for f, op in zip(todo, ops):  # one by one: a progress step per file, and Ctrl-C stops in this thread
            progress(f.name, 0)  # the bar names the file on its way
            api.preupload_lfs_files(repo_id, additions=[op], free_memory=False)
            progress(f.name, f.size)
        api.create_commit(
            repo_id,
            operations=ops,
            commit_message=f"Upload {folder.name} with exaone-gguf ({len(todo)} of {len(files)} files)",
        )
    for f in todo:
        f.status = "sent"
    after = _remote_files(api, repo_id, "verifying the upload", again(folder, repo_id))
    wrong = [f.name for f in files if not _same(folder / f.name, f, after.get(f.name))]
    if wrong:
        raise InputError(
            f"{repo_id}: after the upload the Hub's {wrong[0]} differs from the local file in size or hash "
            f"({len(wrong)} file(s) in all); {again(folder, repo_id)}."
        )
    result.seconds = time.perf_counter() - start
    return result
