"""One vocabulary for where a run is, whoever tells it: the ledger's words (`running`, `completed`, `interrupted`,
`failed: <why>`, `crashed`), never a process's exit status. The Runs screen asks, in this order, the ledger (the
record), the run's feed (its end line comes before the index has imported the close), and — for a run this app
started, which the ledger may never have heard of (it stopped on a mistake before its journal) — the exit status of
the process it started. No UI here.

    run_state(recorded="completed")                          -> RunState("completed", None)
    run_state(recorded="running", ended={"status": "failed", "last_error": "…"}).words   -> "failed: …"
    run_state(exit_code=143).words                           -> "interrupted"
    run_state(exit_code=2, exit_line="notes-tui: error: …").words   -> "failed: …"
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

ENDED = ("completed", "interrupted", "failed", "crashed")  # the ledger's words for a run that is over
STARTING = "starting"  # a run this app started that the ledger does not know yet
UNKNOWN_WHY = "see its log (l)"
_INTERRUPTED_CODES = (130, 143)  # the run's own exit status after SIGINT, SIGTERM or a stop request (README)
_ERROR_PREFIXES = ("notes-tui: error: ", "notes-tui: ")


def exit_status(code: int | None) -> str | None:
    """The ledger's word for the exit status of a run's process: 0 completed; 130/143 (SIGINT, SIGTERM, a stop
    request) interrupted; killed by a signal it could not catch crashed (its journal stays open: the ledger says the
    same); anything else failed. None while it runs."""
    if code is None:
        return None
    if code == 0:
        return "completed"
    if code in _INTERRUPTED_CODES or code in (-signal.SIGINT, -signal.SIGTERM):
        return "interrupted"
    return "crashed" if code < 0 else "failed"


def error_words(line: str | None) -> str | None:
    """A run's last log line as the reason it failed: without the program's own prefix."""
    if not line or not line.strip():
        return None
    line = line.strip()
    for prefix in _ERROR_PREFIXES:
        if line.startswith(prefix):
            return line[len(prefix):].strip() or None
    return line


@dataclass(frozen=True)
class RunState:
    status: str  # running, starting, or one of ENDED
    why: str | None = None  # a failed run: why; an interrupted one: what stopped it, when known

    @property
    def over(self) -> bool:
        return self.status in ENDED

    @property
    def words(self) -> str:
        """The status, and for a failed run why (`failed: <why>`)."""
        if self.status == "failed":
            return f"failed: {self.why or UNKNOWN_WHY}"
        return self.status

    @property
    def row_words(self) -> str:
        """What a narrow row says: as `words`, without the experiment file's path a mistake starts with (the row
        names the experiment; the detail below the table says it all)."""
        if self.status == "failed" and self.why:
            return f"failed: {without_path(self.why)}"
        return self.words


def without_path(why: str) -> str:
    """"/long/path/pna.toml: model.hosts: no server answers" -> "model.hosts: no server answers"."""
    head, sep, rest = why.partition(": ")
    if sep and rest and head.startswith(("/", "~", ".")) and " " not in head:
        return rest
    return why


def run_state(recorded: str | None = None, last_error: str | None = None, ended: dict[str, Any] | None = None,
              exit_code: int | None = None, exit_line: str | None = None) -> RunState:
    """Where a run is. `recorded`/`last_error`: the ledger's status and last error (None: the ledger has no such
    run, or is not asked); `ended`: the feed's end line, when the run is followed; `exit_code`/`exit_line`: the
    process this app started and the last line of its log, once it exited.

    The ledger is the record and wins once it says the run is over. While it still says running, the feed's end line
    is newer; then a process that exited (its journal's close not imported yet, or never written: a mistake before
    the first note). With none of these, a run the ledger lists is running and one it does not is starting."""
    if recorded in ENDED:
        if recorded == "failed":
            return RunState(recorded, last_error or _ended_why(recorded, ended, exit_line))
        if recorded == "interrupted":  # what stopped it (the feed's reason), else its last error
            return RunState(recorded, _ended_why(recorded, ended, exit_line) or last_error)
        return RunState(recorded)
    if ended is not None and ended.get("status") in ENDED:
        status = str(ended["status"])
        return RunState(status, _ended_why(status, ended, exit_line))
    by_exit = exit_status(exit_code)
    if by_exit is not None:
        return RunState(by_exit, _ended_why(by_exit, None, exit_line))
    return RunState("running" if recorded == "running" else STARTING)


def _ended_why(status: str, ended: dict[str, Any] | None, exit_line: str | None) -> str | None:
    """Why, from the feed's end line or the run's log: a failed run's last error (the feed's `reason` is only
    "error" then: the ledger's last error says more), an interrupted run's reason ("SIGTERM", "stop requested by …")."""
    ended = ended or {}
    if status == "failed":
        return (str(ended["last_error"]) if ended.get("last_error") else None) or error_words(exit_line)
    if status == "interrupted" and ended.get("reason"):
        return str(ended["reason"])
    return None
