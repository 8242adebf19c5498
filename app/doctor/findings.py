"""One line of `notes-tui doctor`, how the lines read, and the runner that keeps each check to itself: every check
runs in a thread of its own, all at once, so the slowest costs its own timeout rather than the sum; a check that
raises is a `fail` line naming the exception, never a traceback; a check still running at the deadline is a `fail`
line too, and the others are reported as they are."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"

DEADLINE_S = 30.0  # every check keeps its own timeouts (3 s a server, 5 s MySQL, 10 s squeue); this is the backstop
_NAME_WIDTH = 10


@dataclass(frozen=True)
class Finding:
    check: str  # what was checked: slurm, config, profiles, models, experiment, .env, mysql, ledger, server, …
    status: Status
    detail: str  # what was found: never a credential, never note text
    fix: str = ""  # what to do about it; "" when there is nothing to do

    def line(self) -> str:
        """`status  check  detail — fix`, on one line whatever the detail quotes (a TOML error, a Slurm message)."""
        fix = f" — {self.fix}" if self.fix and self.status != OK else ""
        return _one_line(f"{self.status:<4}  {self.check:<{_NAME_WIDTH}}  {self.detail}{fix}")

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix or None}


def _one_line(text: str) -> str:
    first, *rest = text.splitlines() or [""]
    return " ".join([first.rstrip(), *(part.strip() for part in rest if part.strip())])


def split_fix(message: str) -> tuple[str, str]:
    """The project's one-line errors read `what is wrong — the fix`: the two halves."""
    detail, sep, fix = message.partition(" — ")
    return (detail.strip(), fix.strip()) if sep else (message.strip(), "")


def failed(findings: Sequence[Finding]) -> bool:
    return any(f.status == FAIL for f in findings)


def summary(findings: Sequence[Finding]) -> str:
    """The last line: how many lines failed, want a look, are fine."""
    fails = sum(f.status == FAIL for f in findings)
    warns = sum(f.status == WARN for f in findings)
    if not fails and not warns:
        return f"all {len(findings)} ok"
    return f"{fails} failed, {warns} warn, {len(findings) - fails - warns} ok"


Check = Callable[[], list[Finding]]


def run_checks(checks: Sequence[tuple[str, Check]], deadline_s: float = DEADLINE_S) -> list[Finding]:
    """Every check at once, each in a daemon thread (one that hangs past the deadline is reported and left behind:
    it cannot keep the process from ending). The findings in the order of `checks`."""
    results: list[list[Finding] | None] = [None] * len(checks)

    def guarded(i: int, name: str, check: Check) -> None:
        try:
            results[i] = list(check())
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            said = str(exc).splitlines()[0][:160] if str(exc).strip() else ""
            results[i] = [Finding(name, FAIL, f"the check itself failed: {exc.__class__.__name__}"
                                  + (f": {said}" if said else ""), "report it with the line above")]

    threads = [threading.Thread(target=guarded, args=(i, name, check), name=f"doctor-{name}", daemon=True)
               for i, (name, check) in enumerate(checks)]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    out: list[Finding] = []
    for (name, _), found in zip(checks, results):
        if found is None:
            out.append(Finding(name, FAIL, f"no answer within {deadline_s:g} s (a hung filesystem or server?)",
                               "run notes-tui doctor again; if it lasts, look at what this check reaches"))
        else:
            out.extend(found)
    return out
