"""`notes-tui server history`: the user's past (and present) server jobs from Slurm's accounting (`sacct`), each with
its state, run time, GPUs and GPU-hours (run time × GPUs), the GPU-hours used and idle beside it where the job left
its record in the ledger dir (ledger/serverjobs.py), and the totals per day and per ISO week.

Server jobs are those `squeue` shows as such (named `ollama…` or `llmserver-…`, or a Comment `ollama:`/`openai:` —
sacct has the Comment only where the site stores it, AccountingStoreFlags=job_comment) and the jobs of `submit
--with-server` (`notes-EXP+PROFILE`), which hold a GPU for their server too.

One sacct call: `sacct --user USER -X -P -n --delimiter=<US> --format=…`. `-X`: the allocation, not its steps. The
fields are separated by the ASCII unit separator rather than sacct's `|`, which a job name may hold; the two fields a
user fills (the job name, the Comment) are split off last, the name from the left and the Comment from the right.
GPUs come from AllocTRES (`gres/gpu=N`; only typed counts `gres/gpu:a100=N` where the untyped one is missing). A job
counts on the day (and week) it started — one that never started, on the day it was submitted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from app.cluster.slurm import OPENAI_JOB_PREFIX, Slurm, comment_kind, is_server_job, is_with_server_job

DELIMITER = "\x1f"  # ASCII unit separator: no job name or Comment holds one
# the free fields (the name, the Comment) last: everything before them is Slurm's own and has no delimiter in it
FIELDS = ("JobID", "State", "Submit", "Start", "End", "ElapsedRaw", "AllocTRES", "Partition", "NodeList", "JobName",
          "Comment")
DEFAULT_SINCE = "7d"
SINCE_FIX = "write 7d, 2w, 12h, 30m, or a date: 2026-12-01 (the cluster's local time, as sacct's)"
_AGO = re.compile(r"^(\d+)([wdhm])$")
_AGO_S = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60}
_RUNNING = ("RUNNING", "PENDING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING", "CONFIGURING")


@dataclass(frozen=True)
class PastJob:
    """One server job as sacct accounts for it, with its ledger record where notes-tui's job left one."""

    job_id: str
    name: str
    state: str  # sacct's words: COMPLETED, CANCELLED by 1234, TIMEOUT, RUNNING…
    submit: datetime | None  # the cluster's local time, as sacct gives it
    start: datetime | None  # None: it never started
    end: datetime | None  # None: still running (or never started)
    elapsed_s: int
    gpus: int
    partition: str
    node: str
    comment: str = ""
    cluster: str | None = None
    record: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def state_word(self) -> str:
        """The state without its `by UID` (CANCELLED by 1234 -> CANCELLED)."""
        return self.state.split()[0] if self.state.strip() else "-"

    @property
    def kind(self) -> str:
        """ollama | openai-compatible | with-run (a `submit --with-server` job)."""
        if is_with_server_job(self.name):
            return "with-run"
        return comment_kind(self.comment) or ("openai-compatible" if self.name.startswith(OPENAI_JOB_PREFIX)
                                              else "ollama")

    @property
    def running(self) -> bool:
        return self.state_word in _RUNNING

    @property
    def gpu_hours(self) -> float:
        return self.elapsed_s * self.gpus / 3600

    @property
    def day(self) -> date | None:
        when = self.start or self.submit
        return when.date() if when else None

    def recorded(self, key: str) -> float | None:
        """GPU-hours `used` / `idle` / `starting` from the job's ledger record; None without one."""
        if self.record is None:
            return None
        value = (self.record.get("gpu_hours") or {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    def as_json(self) -> dict[str, Any]:
        rec = self.record
        ledger = None if rec is None else {
            "status": rec.get("status"), "ended_by": rec.get("ended_by"), "requests": rec.get("requests"),
            "starting_s": rec.get("starting_s"), "busy_s": rec.get("busy_s"), "idle_s": rec.get("idle_s"),
            "gpus": rec.get("gpus"), "gpu_hours": rec.get("gpu_hours"), "updated_at": rec.get("updated_at")}
        return {"job_id": self.job_id, "cluster": self.cluster, "name": self.name, "kind": self.kind,
                "state": self.state, "submit": _iso(self.submit), "start": _iso(self.start), "end": _iso(self.end),
                "elapsed_s": self.elapsed_s, "gpus": self.gpus, "gpu_hours": round(self.gpu_hours, 4),
                "partition": self.partition or None, "node": self.node or None, "ledger": ledger}


@dataclass
class Total:
    """The jobs of one day or one week."""

    label: str
    first: date
    jobs: int = 0
    elapsed_s: int = 0
    gpu_hours: float = 0.0
    used: float = 0.0  # from the ledger records, of `recorded` jobs
    idle: float = 0.0
    recorded: int = 0

    def add(self, job: PastJob) -> None:
        self.jobs += 1
        self.elapsed_s += job.elapsed_s
        self.gpu_hours += job.gpu_hours
        used, idle = job.recorded("used"), job.recorded("idle")
        if used is not None or idle is not None:
            self.recorded += 1
            self.used += used or 0.0
            self.idle += idle or 0.0

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "from": self.first.isoformat(), "jobs": self.jobs, "elapsed_s": self.elapsed_s,
                "gpu_hours": round(self.gpu_hours, 4), "recorded_jobs": self.recorded,
                "used_gpu_hours": round(self.used, 4) if self.recorded else None,
                "idle_gpu_hours": round(self.idle, 4) if self.recorded else None}


# ---- parsing ----
def parse_time(text: str) -> datetime | None:
    """sacct's `2026-12-06T21:35:14` (standard format); None for Unknown, None, empty."""
    text = text.strip()
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def alloc_gpus(tres: str) -> int:
    """GPUs in sacct's AllocTRES (`billing=16,cpu=16,gres/gpu:l40s=1,gres/gpu=1,mem=125G,node=1`): the untyped
    `gres/gpu=N` when there (it counts every type), else the sum of the typed ones; 0 when none."""
    total: int | None = None
    typed = 0
    for item in tres.split(","):
        key, _, value = item.strip().partition("=")
        if not value.strip().isdigit():
            continue
        if key == "gres/gpu":
            total = int(value)
        elif key.startswith("gres/gpu:"):
            typed += int(value)
    return total if total is not None else typed


def _split(line: str) -> dict[str, str] | None:
    """One sacct line as FIELDS; the name from the left and the Comment from the right, as the only fields a user
    writes (so a stray delimiter in one of them lands in the name, never shifts Slurm's own fields)."""
    fixed = len(FIELDS) - 2
    parts = line.split(DELIMITER, fixed)
    if len(parts) != fixed + 1:
        return None
    name, sep, comment = parts[-1].rpartition(DELIMITER)
    if not sep:
        return None
    return dict(zip(FIELDS, [*parts[:-1], name, comment]))


def parse_sacct(text: str, cluster: str | None = None) -> list[PastJob]:
    """Lines of `sacct -X -P -n --delimiter=US --format=FIELDS`: the server jobs among them."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        row = _split(line.rstrip("\n"))
        if row is None or not re.match(r"^\d+", row["JobID"]):
            continue
        name, comment = row["JobName"], row["Comment"].strip()
        if not (is_server_job(name, comment) or is_with_server_job(name)):
            continue
        elapsed = row["ElapsedRaw"].strip()
        jobs.append(PastJob(job_id=row["JobID"].strip(), name=name, state=row["State"].strip(),
                            submit=parse_time(row["Submit"]), start=parse_time(row["Start"]),
                            end=parse_time(row["End"]), elapsed_s=int(elapsed) if elapsed.isdigit() else 0,
                            gpus=alloc_gpus(row["AllocTRES"]), partition=row["Partition"].strip(),
                            node="" if row["NodeList"].strip() in ("None assigned", "(null)") else row["NodeList"].strip(),
                            comment="" if comment == "(null)" else comment, cluster=cluster))
    return jobs


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `2w`, `12h`, `30m` before now, or a date / date and time (`2026-12-01`, `2026-12-01T08:00`) in the
    cluster's local time, as sacct reads -S. ValueError with the fix."""
    value = text.strip()
    now = now or datetime.now()
    m = _AGO.match(value.lower())
    if m:
        return now - timedelta(seconds=int(m.group(1)) * _AGO_S[m.group(2)])
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time — {SINCE_FIX}") from None
    return at.replace(tzinfo=None) if at.tzinfo is None else at.astimezone().replace(tzinfo=None)


# ---- asking ----
def sacct_args(user: str, since: datetime) -> list[str]:
    return ["--user", user, "-X", "-P", "-n", f"--delimiter={DELIMITER}", "--format=" + ",".join(FIELDS),
            "-S", since.strftime("%Y-%m-%dT%H:%M:%S")]


def current_user() -> str:
    import getpass
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()


def server_history(slurm: Slurm, since: datetime, ledger_dir: Path | None, user: str | None = None) -> list[PastJob]:
    """The user's server jobs that ran (or were submitted) since `since`, oldest first, each with its ledger record
    where there is one. Blocking (one sacct). AccountingUnavailable (exit 2) where sacct cannot answer."""
    jobs = parse_sacct(slurm.sacct(sacct_args(user or current_user(), since)), slurm.cluster)
    if ledger_dir is None:
        return jobs
    return with_records(jobs, ledger_records(ledger_dir))


def ledger_records(ledger_dir: Path) -> dict[tuple[str | None, str], dict[str, Any]]:
    from ledger.serverjobs import read_records

    return {(r.get("cluster") or None, str(r["job_id"])): r for r in read_records(ledger_dir)}


def with_records(jobs: Iterable[PastJob], records: dict[tuple[str | None, str], dict[str, Any]]) -> list[PastJob]:
    from dataclasses import replace

    return [replace(j, record=records.get((j.cluster, j.job_id))) for j in jobs]


# ---- totals ----
def week_of(day: date) -> tuple[str, date]:
    """The ISO week (`2026-W49`) and its Monday."""
    year, week, weekday = day.isocalendar()
    return f"{year}-W{week:02d}", day - timedelta(days=weekday - 1)


def totals(jobs: Iterable[PastJob], by: str = "day") -> list[Total]:
    """Per `day` or per ISO `week`, oldest first; a job counts where it started (submitted, if it never did)."""
    groups: dict[str, Total] = {}
    for job in jobs:
        day = job.day
        if day is None:
            continue
        if by == "day":
            label, first = f"{day.isoformat()} {day.strftime('%a')}", day
        else:
            label, first = week_of(day)
            label = f"{label} ({first.strftime('%b %d')} – {(first + timedelta(days=6)).strftime('%b %d')})"
        groups.setdefault(label, Total(label, first)).add(job)
    return sorted(groups.values(), key=lambda t: t.first)


def grand_total(jobs: Iterable[PastJob]) -> Total:
    whole = Total("all", date.min)
    for job in jobs:
        whole.add(job)
    return whole


# ---- words ----
def hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(rows: list[tuple[str, ...]], right: Iterable[int] = ()) -> str:
    right = set(right)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "-"


def history_text(jobs: list[PastJob], since: datetime, ledger_dir: Path | None,
                 duration: Callable[[float | None], str] | None = None) -> str:
    """What `server history` prints: the jobs, then the totals per day and per week."""
    if duration is None:
        from ledger.clock import format_duration as duration
    head = f"server jobs since {_when(since)} (sacct; the cluster's local time)"
    if not jobs:
        return f"{head}: none"
    whole = grand_total(jobs)
    out = [f"{head}: {whole.jobs}, {hours(whole.gpu_hours)} GPU-hours"]
    rows = [("JOB", "NAME", "STATE", "STARTED", "RUN TIME", "GPUS", "GPU-H", "USED", "IDLE", "NODE")]
    for j in jobs:
        state = j.state_word + (" (so far)" if j.running and j.start else "")
        rows.append((j.job_id + (f" ({j.cluster})" if j.cluster else ""), j.name, state, _when(j.start),
                     duration(j.elapsed_s) if j.start else "-", str(j.gpus), hours(j.gpu_hours),
                     hours(j.recorded("used")), hours(j.recorded("idle")), j.node or "-"))
    out.append(_table(rows, right=(4, 5, 6, 7, 8)))
    for by, title in (("day", "DAY"), ("week", "WEEK")):
        rows = [(title, "JOBS", "RUN TIME", "GPU-H", "USED", "IDLE", "RECORDED")]
        for t in totals(jobs, by):
            rows.append((t.label, str(t.jobs), duration(t.elapsed_s), hours(t.gpu_hours),
                         hours(t.used if t.recorded else None), hours(t.idle if t.recorded else None),
                         f"{t.recorded} of {t.jobs}"))
        out += ["", _table(rows, right=(1, 2, 3, 4, 5))]
    where = f"{ledger_dir}/server-jobs/" if ledger_dir is not None else "the ledger dir's server-jobs/"
    out += ["", "GPU-H: run time × GPUs. USED, IDLE: GPU-hours with a request in flight and with none, from the job's",
            f"record in {where} (jobs notes-tui started; - where there is none, RECORDED: how many have one)."]
    return "\n".join(out)


def history_json(jobs: list[PastJob], since: datetime, ledger_dir: Path | None) -> dict[str, Any]:
    return {"since": since.strftime("%Y-%m-%dT%H:%M:%S"), "ledger_dir": str(ledger_dir) if ledger_dir else None,
            "jobs": [j.as_json() for j in jobs], "days": [t.as_json() for t in totals(jobs, "day")],
            "weeks": [t.as_json() for t in totals(jobs, "week")], "total": grand_total(jobs).as_json()}


def _iso(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%S") if at else None
