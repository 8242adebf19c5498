"""A server job looked into, for the Servers screen's `l`: the end of its output file, and what it runs — the
profile's command and the sbatch options as notes-tui submitted them, what Slurm holds of it (`scontrol show job`)
and its script (`scontrol write batch_script ID -`). No UI here.

Where the output file is: `scontrol show job ID` says (StdOut) while Slurm still knows the job; after that the
`--output` notes-tui submitted with (recorded beside it, `<ledger dir>/slurm/JOBID.job.json`), else the ledger's
`slurm/*-JOBID.out`. Output files live on a shared file system and may be large: only the last `TAIL_BYTES` are read.

Nothing secret is shown: the job's token (which its output never holds — the job names the token's file, not the
token) is blotted out wherever it might appear, and so are a Bearer header, an `--api-key`-like option's value and a
`…TOKEN=`/`…KEY=`/`…SECRET=`/`…PASSWORD=` assignment, in the output, the command and the script alike.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.cluster.slurm import Slurm
    from app.cluster.submit import Submission

TAIL_LINES = 60
TAIL_BYTES = 256 * 1024  # 60 lines of even a chatty server fit in far less; a 2 GB log costs one seek
LINE_CHARS = 400
SCRIPT_LINES = 200
SUBMITTED_SUFFIX = ".job.json"
HIDDEN = "‹hidden›"

_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
# an option ending in key/token/secret/password (--api-key X, --hf-token=X; not --tokenizer), and NAME=VALUE with
# NAME ending so (HF_TOKEN=…, OPENAI_API_KEY=…)
_SECRET_OPTION = re.compile(r"(?i)(--?[\w-]*(?:key|token|secret|password|passwd))(=|\s+)(?!-)(\S+)")
_SECRET_ASSIGN = re.compile(r"\b([A-Za-z_]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD))=(\S+)", re.IGNORECASE)
_PATTERN = re.compile(r"%(\d*)([AajJNnstux%])")


def hide_secrets(text: str, tokens: tuple[str, ...] = ()) -> str:
    for token in tokens:
        if token:
            text = text.replace(token, HIDDEN)
    text = _BEARER.sub(lambda m: m.group(1) + HIDDEN, text)
    text = _SECRET_OPTION.sub(lambda m: m.group(1) + m.group(2) + HIDDEN, text)
    return _SECRET_ASSIGN.sub(lambda m: f"{m.group(1)}={HIDDEN}", text)


def clean_line(line: str, width: int = LINE_CHARS) -> str:
    """One line of a job's output as a terminal would have left it: colours dropped, a `\\r`-redrawn progress line
    at its last state, no control characters; cut at `width`."""
    line = _ANSI.sub("", line)
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    line = _CONTROL.sub("", line.replace("\t", "    "))
    return line if len(line) <= width else line[:width - 1] + "…"


def read_tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> tuple[list[str], int]:
    """The last `lines` lines of `path`, reading at most its last `max_bytes` (OSError as open() raises it); and
    the file's size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = max(0, size - max_bytes)
        f.seek(start)
        data = f.read(max_bytes)
    text = data.decode("utf-8", errors="replace")
    got = text.split("\n")
    if start > 0 and got:
        got = got[1:]  # began mid-line
    if got and got[-1] == "":
        got = got[:-1]
    return [clean_line(line) for line in got[-lines:]], size


def expand_output(pattern: str, job_id: str, name: str, user: str = "", node: str = "") -> str:
    """sbatch's filename pattern (`%x-%j.out`) for one job: %j %J %A %x %u %N %%; %a %t %s %n as 0."""
    def one(m: re.Match) -> str:
        pad, code = m.group(1), m.group(2)
        value = {"j": job_id, "J": job_id, "A": job_id, "x": name, "u": user, "N": node, "%": "%"}.get(code, "0")
        return value.zfill(int(pad)) if pad and code != "%" else value

    return _PATTERN.sub(one, pattern)


# ---- what notes-tui submitted ----
def submission_path(ledger_dir: Path, job_id: str, cluster: str | None = None) -> Path:
    return Path(ledger_dir) / "slurm" / ((f"{cluster}-" if cluster else "") + f"{job_id}{SUBMITTED_SUFFIX}")


def record_submission(ledger_dir: Path, job_id: str, cluster: str | None, sub: Submission, profile: str) -> None:
    """Keep what a server job was submitted with beside its output: the profile, its command (secrets blotted out),
    the sbatch options and script. Best effort: a ledger dir that cannot be written costs only this record."""
    from ledger.clock import utc_now_iso

    env = sub.env
    output = next((o.split("=", 1)[1] for o in sub.options if o.startswith("--output=")), None)
    record = {"job_id": job_id, "cluster": cluster, "profile": profile, "submitted_at": utc_now_iso(),
              "script": str(sub.script), "options": [hide_secrets(o) for o in sub.options],
              "args": [hide_secrets(a) for a in sub.args], "output": output,
              "command": hide_secrets(env.get("NOTES_TUI_SERVER_COMMAND", "")),
              "kind": env.get("NOTES_TUI_SERVER_KIND"), "idle": env.get("NOTES_TUI_IDLE"),
              "isolate": env.get("NOTES_TUI_ISOLATE") != "0", "models_dir": env.get("OLLAMA_MODELS"),
              "num_parallel": env.get("NOTES_TUI_NUM_PARALLEL")}
    path = submission_path(ledger_dir, job_id, cluster)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=1) + "\n")
    except OSError:
        pass


def read_submission(ledger_dir: Path, job_id: str, cluster: str | None = None) -> dict[str, Any] | None:
    try:
        data = json.loads(submission_path(ledger_dir, job_id, cluster).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- looking ----
@dataclass
class JobLook:
    job_id: str
    name: str
    cluster: str | None = None
    output: Path | None = None  # the output file
    output_from: str = ""  # where its path came from
    lines: list[str] = field(default_factory=list)  # its last lines
    size: int | None = None  # its size in bytes; None when it could not be read
    output_problem: str | None = None  # why there are no lines
    submitted: dict[str, Any] | None = None  # as notes-tui submitted it (record_submission)
    slurm: dict[str, str] = field(default_factory=dict)  # scontrol show job; {} once Slurm forgot the job
    script: str | None = None
    script_problem: str | None = None
    tokens: tuple[str, ...] = field(default=(), repr=False)  # to blot out of anything shown; never shown

    def reread(self, lines: int = TAIL_LINES) -> None:
        """The output's tail again (the job writes on). From a worker thread while the screen shows the last
        reading: the new one replaces it at once, never half-made."""
        self.lines, self.size, self.output_problem = self._read(lines)

    def _read(self, lines: int) -> tuple[list[str], int | None, str | None]:
        if self.output is None:
            return [], None, ("Slurm does not say where this job writes (scontrol show job has no StdOut) and "
                              "notes-tui did not submit it from this ledger dir")
        try:
            raw, size = read_tail(self.output, lines)
        except FileNotFoundError:
            if self.slurm.get("JobState") == "PENDING":
                return [], None, "nothing written yet: the job has not started"
            return [], None, (f"{self.output} does not exist (yet) — it is written on the job's node: a path outside "
                              "the shared file systems is not readable from here")
        except OSError as exc:
            return [], None, f"cannot read {self.output}: {exc.strerror or exc}"
        return [hide_secrets(line, self.tokens) for line in raw], size, None


def _job_tokens(job_id: str, cluster: str | None, environ: dict[str, str] | None) -> tuple[str, ...]:
    from app.cluster import tokens

    rec = tokens.job_record(job_id, cluster, environ)
    return (rec["token"],) if rec else ()


def look_at_job(slurm: Slurm, job_id: str, name: str, ledger_dir: Path, environ: dict[str, str] | None = None,
                lines: int = TAIL_LINES) -> JobLook:
    """Everything `l` shows of a job. Blocking (two scontrol calls, one file read): call it from a worker."""
    from app.cluster.history import current_user

    look = JobLook(job_id, name, slurm.cluster, tokens=_job_tokens(job_id, slurm.cluster, environ))
    look.slurm = slurm.show_job(job_id) or {}
    look.submitted = read_submission(ledger_dir, job_id, slurm.cluster)
    node = look.slurm.get("BatchHost") or look.slurm.get("NodeList") or ""
    user = look.slurm.get("UserId", "").split("(")[0] or current_user()
    if look.slurm.get("StdOut"):
        look.output, look.output_from = Path(expand_output(look.slurm["StdOut"], job_id, name, user, node)), \
            "scontrol show job"
    elif look.submitted and look.submitted.get("output"):
        look.output = Path(expand_output(str(look.submitted["output"]), job_id, name, user, node))
        look.output_from = "as submitted"
    else:
        found = sorted((Path(ledger_dir) / "slurm").glob(f"*-{job_id}.out"))
        if found:
            look.output, look.output_from = found[0], "the ledger dir"
    look.reread(lines)
    if look.slurm:
        from app.cluster.slurm import SlurmError

        try:
            script = slurm.batch_script(job_id)
        except SlurmError as exc:
            look.script_problem = str(exc)
        else:
            kept = script.splitlines()
            more = len(kept) - SCRIPT_LINES
            look.script = hide_secrets("\n".join(clean_line(x) for x in kept[:SCRIPT_LINES]), look.tokens) + (
                f"\n… {more} more lines" if more > 0 else "")
    else:
        look.script_problem = "Slurm no longer knows this job (it ended): its script cannot be asked for"
    return look
