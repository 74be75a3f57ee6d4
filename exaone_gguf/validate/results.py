"""The result record every validator check returns."""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("pass", "fail", "warn", "skip")


@dataclass
class CheckResult:
    """One check's outcome: status is "pass", "fail", "warn" or "skip"; detail is one line for people,
    data holds machine-readable specifics for the JSON report."""

    name: str
    status: str
    detail: str = ""
    data: dict | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CheckResult status must be one of {STATUSES}, not {self.status!r}")
