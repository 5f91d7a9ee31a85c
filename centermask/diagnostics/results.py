"""What every acceptance check returns, and the table and JSON made of them."""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

__all__ = ["Check", "CheckList", "PASS", "FAIL", "SKIP", "INFO", "relative_error"]

PASS, FAIL, SKIP, INFO = "pass", "FAIL", "skip", "info"


@dataclass
class Check:
    """One line of the table: ``part`` (1-5), a ``name``, a ``status`` (pass / FAIL / skip /
    info), a short ``detail`` and the measured values (``data``, JSON-ready)."""

    part: int
    name: str
    status: str
    detail: str = ""
    data: Dict = field(default_factory=dict)


def relative_error(candidate, reference) -> float:
    """max |candidate - reference| / max |reference| over two tensors (0 for two zeros)."""
    candidate, reference = candidate.detach().double().cpu(), reference.detach().double().cpu()
    if candidate.shape != reference.shape:
        return math.inf
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    diff = float((candidate - reference).abs().max()) if reference.numel() else 0.0
    if not math.isfinite(diff):
        return math.inf
    return diff / scale if scale > 0 else diff


class CheckList:
    """The checks of a run, in order; ``run`` turns an exception into a FAIL line."""

    def __init__(self, log: Callable[[str], None] = print):
        self.checks: List[Check] = []
        self.log = log

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        self.log(format_row(check))
        return check

    def run(self, part: int, name: str, function: Callable[[], Check]) -> None:
        """Add ``function()``'s check, or a FAIL naming the exception it raised."""
        try:
            self.add(function())
        except Exception as error:  # a failing part must not hide the others
            self.add(Check(part, name, FAIL, f"{type(error).__name__}: {error}"[:300]))

    @property
    def failed(self) -> List[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def table(self) -> str:
        header = f"{'part':<5}{'check':<52}{'status':<8}detail"
        return "\n".join([header, "-" * len(header)] + [format_row(c) for c in self.checks])

    def write_json(self, path: Path, environment: Dict, options: Dict) -> None:
        report = {
            "ok": not self.failed,
            "failed": [c.name for c in self.failed],
            "environment": environment,
            "options": options,
            "checks": [asdict(c) for c in self.checks],
        }
        Path(path).write_text(json.dumps(report, indent=2, default=_json_default))


def format_row(check: Check) -> str:
    return f"{check.part:<5}{check.name[:51]:<52}{check.status:<8}{check.detail}"


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)
