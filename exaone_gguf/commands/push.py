"""`exaone-gguf push` (and `convert --push`): a validated release folder to the Hugging Face Hub."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exaone_gguf.commands import Interrupted, Ui


@dataclass(frozen=True)
class PushJob:
    release_dir: Path
    repo_id: str
    private: bool = False
    dry_run: bool = False
    force: bool = False  # push a release that failed validation or was never validated
    as_json: bool = False


def push(job: PushJob, ui: Ui):
    """Push under the Ui's progress, one step at a time, then show what was sent and where."""
    from huggingface_hub.utils import disable_progress_bars

    from exaone_gguf.publish.push import again
    from exaone_gguf.publish.push import push as push_release

    try:
        disable_progress_bars()  # the Ui shows the upload; huggingface_hub's own bars would interleave with it
        with ui.uploading() as (on_stage, progress):
            result = push_release(
                job.release_dir,
                job.repo_id,
                on_stage=on_stage,
                progress=progress,
                private=job.private,
                dry_run=job.dry_run,
                force=job.force,
            )
    except KeyboardInterrupt:
        raise Interrupted(f"{again(job.release_dir, job.repo_id)}.") from None
    ui.show(result, job.as_json)
    return result
