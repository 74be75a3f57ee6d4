"""The validation report: every check's result, the logit metrics, a rich table and a JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from exaone_gguf.validate.results import CheckResult

_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


@dataclass
class Report:
    model: str
    reference: str | None
    file_type: str
    device: str
    checks: list[CheckResult] = field(default_factory=list)
    metrics: dict | None = None  # LogitComparison.to_dict()
    thresholds: dict | None = None
    seconds: float = 0.0
    threads: int = 1  # llama.cpp's n_threads for the logits run

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "reference": self.reference,
            "file_type": self.file_type,
            "device": self.device,
            "passed": self.passed,
            "counts": {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "warn", "skip")},
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail, **({"data": c.data} if c.data else {})}
                for c in self.checks
            ],
            "metrics": self.metrics,
            "thresholds": self.thresholds,
            "seconds": round(self.seconds, 3),
            "threads": self.threads,
        }

    def write_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    def render(self, console: Console) -> None:
        table = Table(title=f"validate {Path(self.model).name} ({self.file_type})", title_justify="left")
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        for c in self.checks:
            table.add_row(Text(c.name), Text(c.status.upper(), style=_STYLE[c.status]), Text(c.detail))
        console.print(table)
        if self.metrics:
            m = self.metrics
            mt = Table(title="logits vs reference", title_justify="left")
            for col in (
                "tokens",
                "mean KLD",
                "median",
                "p99",
                "max",
                "same top-1",
                "RMS Δp",
                "PPL ref",
                "PPL gguf",
                "max |Δlogit|",
            ):
                mt.add_column(col, justify="right")
            mt.add_row(
                str(m["n_tokens"]),
                _g(m["mean_kld"]),
                _g(m["median_kld"]),
                _g(m["p99_kld"]),
                _g(m["max_kld"]),
                f"{m['same_top1']:.2f}%" if m["same_top1"] is not None else "-",
                _g(m["rms_delta_p"]),
                _g(m["ppl_ref"]),
                _g(m["ppl_test"]),
                _g(m["max_abs_logit_diff"]),
            )
            console.print(mt)
        verdict = Text("PASSED", style="bold green") if self.passed else Text("FAILED", style="bold red")
        console.print(Text("validation ").append(verdict).append(f" in {self.seconds:.1f} s"))


def _g(x) -> str:
    return "-" if x is None else f"{x:.4g}"
