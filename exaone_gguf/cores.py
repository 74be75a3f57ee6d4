"""How many threads to use when the user does not say: the cores this process may run on (its CPU affinity,
as llama-quantize counts them), not the machine's total, so a job pinned by taskset, cgroups or a CI runner
uses what it was given."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The number of CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """`--threads N` as given, or every available core when it is None."""
    return available_cores() if threads is None else max(1, int(threads))
