"""This user's Ollama server jobs, from Slurm's own commands: `squeue` (one call for all jobs, at most every 15 s for
the whole process), `sbatch --parsable`, `scancel`. No UI here; the TUI and the `server`/`submit` commands call it.

No `squeue` on the machine (a laptop) is not an error: `Slurm.available` is False and the callers leave the Slurm
parts out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.errors import UserError

SQUEUE_MIN_INTERVAL_S = 15.0  # sites treat `watch squeue` as an RPC storm
COMMAND_TIMEOUT_S = 30.0
JOB_NAME_PREFIX = "ollama"  # our server jobs are ollama-<profile>; the SOP's are ollama_0.11.10_server_job
# OpenAI-compatible servers (vLLM, SGLang, llama-server) run as llmserver-<profile>: a name no other job of the user
# is likely to have, since a pending job is known as ours by its name alone
OPENAI_JOB_PREFIX = "llmserver-"
COMMENT_PREFIX = "ollama:"
COMMENT_PREFIXES = {"ollama:": "ollama", "openai:": "openai-compatible"}  # the job's Comment: KIND:NODE:PORT

# -O pads and cuts every field at 20 characters, so an explicit -o with a delimiter. The job name is the one field a
# user may fill with anything, the delimiter too: the parser splits the fields before it from the left and those
# after it from the right.
SQUEUE_FORMAT = "%i|%T|%r|%N|%k|%L|%b|%P|%j"
_KEYS = {"%i": "job_id", "%j": "name", "%T": "state", "%r": "reason", "%R": "reason_or_nodes", "%N": "node",
         "%k": "comment", "%L": "left", "%M": "used", "%b": "gres", "%P": "partition"}
# a job without --time that the backfill scheduler started shows 364-23:59:5x left instead of UNLIMITED
_UNLIMITED_AFTER_S = 364 * 86400
_GPU_COUNT = re.compile(r"gpu(?::[A-Za-z0-9_.-]+)?:(\d+)")


class SlurmError(UserError):
    """A Slurm command refused us: one line with what it said and the fix."""


class AccountingUnavailable(SlurmError):
    """sacct cannot answer here: not installed, accounting off on this cluster, or slurmdbd unreachable — the site's
    setup, not a fault of notes-tui or of the command line (exit status 2, as every UserError)."""


@dataclass(frozen=True)
class ServerJob:
    """One Ollama server job as squeue shows it."""

    job_id: str
    name: str
    state: str  # Slurm's own word: PENDING, RUNNING, COMPLETING, …
    reason: str  # why it pends ("Resources", "PartitionConfig"); "" once it runs
    node: str  # "" while pending
    host: str | None  # where the server listens, from the job's Comment; None until it is set
    port: int | None
    time_left_s: int | None  # None: no limit
    gres: str
    partition: str
    cluster: str | None = None
    kind: str = "ollama"  # ollama | openai-compatible: what the server speaks

    @property
    def url(self) -> str | None:
        return f"http://{self.host}:{self.port}" if self.host and self.port else None

    @property
    def phase(self) -> str:
        """pending | starting (running, the server not up yet) | running | ending."""
        if self.state in ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED"):
            return "pending"
        if self.state in ("COMPLETING", "CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                          "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"):
            return "ending"
        return "running" if self.url else "starting"

    @property
    def gpus(self) -> int:
        """GPUs per node the job asked for (gres/gpu), 0 when none."""
        return sum(int(n) for n in _GPU_COUNT.findall(self.gres))

    @property
    def origin(self) -> str:
        return f"job {self.job_id}" + (f" on {self.cluster}" if self.cluster else "")

    def as_json(self) -> dict:
        return {"job_id": self.job_id, "name": self.name, "state": self.state, "phase": self.phase,
                "reason": self.reason or None, "node": self.node or None, "url": self.url,
                "time_left_s": self.time_left_s, "gpus": self.gpus, "gres": self.gres or None,
                "partition": self.partition, "cluster": self.cluster, "kind": self.kind}


def parse_time(text: str) -> int | None:
    """squeue's `[days-][hours:]minutes:seconds` in seconds; None for UNLIMITED (and for what Slurm cannot say)."""
    text = text.strip()
    if not text or text in ("UNLIMITED", "NOT_SET", "INVALID", "N/A"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts[-3:]
    total = days * 86400 + h * 3600 + m * 60 + s
    return None if total >= _UNLIMITED_AFTER_S else total


def comment_kind(comment: str) -> str | None:
    return next((kind for prefix, kind in COMMENT_PREFIXES.items() if comment.startswith(prefix)), None)


def parse_comment(comment: str, node: str) -> tuple[str | None, int | None]:
    """`ollama:PORT` (the node is the host) or `ollama:HOST:PORT` (`openai:` for an OpenAI-compatible server);
    `(null)` while the job has not set it."""
    prefix = next((p for p in COMMENT_PREFIXES if comment.startswith(p)), None)
    if prefix is None:
        return None, None
    rest = comment[len(prefix):]
    host, _, port = rest.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None, None
    return (host or node or None), int(port)


def is_server_job(name: str, comment: str) -> bool:
    return name.startswith((JOB_NAME_PREFIX, OPENAI_JOB_PREFIX)) or comment_kind(comment) is not None


# `submit EXP --with-server PROFILE` names its job notes-EXP+PROFILE (the experiment's stem keeps only [A-Za-z0-9_.-]):
# a server job too as far as GPU-hours go, though squeue lists it with the runs, since no other run may use it
WITH_SERVER_PREFIX = "notes-"


def is_with_server_job(name: str) -> bool:
    return name.startswith(WITH_SERVER_PREFIX) and "+" in name


def _split(line: str, keys: list[str]) -> dict[str, str] | None:
    at = keys.index("name")
    before = line.split("|", at)
    if len(before) != at + 1:
        return None
    after = before[-1].rsplit("|", len(keys) - at - 1)
    if len(after) != len(keys) - at:
        return None
    return dict(zip(keys, before[:-1] + after))


def parse_squeue(text: str, cluster: str | None = None, fmt: str = SQUEUE_FORMAT) -> list[ServerJob]:
    """Rows of `squeue -h -o FMT` (fields from `_KEYS`, the name among them), server jobs only. A `CLUSTER:` line
    (-M without -h) is skipped."""
    keys = [_KEYS[code] for code in fmt.split("|")]
    jobs = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("CLUSTER:"):
            continue
        row = _split(line, keys)
        if row is None:
            continue
        name, state, comment = row["name"], row.get("state", ""), row.get("comment", "")
        node = row.get("node", "")
        reason = row.get("reason", "")
        if "reason_or_nodes" in row:  # %R: "(Resources)" while pending, the node list once running
            value = row["reason_or_nodes"]
            if value.startswith("(") and value.endswith(")"):
                reason = reason or value[1:-1]
            else:
                node = node or value
        if not is_server_job(name, comment):
            continue
        left, gres, partition = row.get("left", ""), row.get("gres", ""), row.get("partition", "")
        host, port = parse_comment(comment, node)
        kind = comment_kind(comment) or ("openai-compatible" if name.startswith(OPENAI_JOB_PREFIX) else "ollama")
        pending = state == "PENDING"
        jobs.append(ServerJob(job_id=row["job_id"], name=name, state=state, reason=reason if pending else "",
                              node=node, host=host if not pending else None, port=port if not pending else None,
                              time_left_s=parse_time(left), gres="" if gres in ("N/A", "(null)") else gres,
                              partition=partition, cluster=cluster, kind=kind))
    return jobs


def queue_ids(text: str) -> set[str]:
    """The job ids of `squeue -h -o FMT` rows whose first field is the id (%i)."""
    ids = set()
    for line in text.splitlines():
        first = line.split("|", 1)[0].strip()
        if first and not line.startswith("CLUSTER:"):
            ids.add(first)
    return ids


def parse_sbatch(text: str) -> str:
    """`sbatch --parsable` prints `ID` or, with -M, `ID;CLUSTER`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"unexpected sbatch output {first[:80]!r}")
    return job_id


Runner = Callable[..., subprocess.CompletedProcess]


# What Slurm says when it is Slurm that is broken here, not the request: the cause in words and what to do.
CAUSES = (
    (("unable to contact slurm controller", "connection refused", "socket timed out", "zero bytes were transmitted",
      "slurm_load_jobs error: unable", "connect failure"),
     "the Slurm controller (slurmctld) is not answering: it is down or unreachable from this node; try again in a "
     "minute, and if it lasts ask your site (scontrol ping)"),
    (("could not establish a configuration source", "slurm.conf", "unable to process configuration",
      "parse error", "configuration file"),
     "Slurm's configuration cannot be read on this node (SLURM_CONF or /etc/slurm/slurm.conf): run notes-tui on a "
     "login node of the cluster, or fix SLURM_CONF"),
    (("munge", "invalid user", "authentication", "credential"),
     "Slurm does not accept this node's credentials (munge): ask your site"),
)


ACCOUNTING_MISSING = ("sacct (Slurm's job accounting) is not installed here — run notes-tui server history on a "
                      "login node of the cluster")


def accounting_cause(stderr: str) -> str | None:
    """What sacct's refusal means when it is the accounting that is missing, in one line with what to do; None for
    any other refusal."""
    lines = [ln.removeprefix("sacct: error: ").strip() for ln in stderr.splitlines() if ln.strip()]
    low = " ".join(lines).lower()
    if "accounting storage is disabled" in low:
        return ("this Slurm keeps no job accounting (sacct: Slurm accounting storage is disabled), so there is no "
                "history of past jobs to list — a site setting (AccountingStorageType): ask your site for slurmdbd; "
                "notes-tui server list shows the jobs in the queue now")
    if any(w in low for w in ("problem talking to the database", "slurmdbd", "persistent connection")):
        # sacct's last line is its conclusion ("Problem talking to the database: Connection refused")
        return (f"sacct cannot reach Slurm's accounting database (sacct: {lines[-1][:160]}) — slurmdbd is down or "
                "unreachable: try again in a minute, and if it lasts ask your site (sacctmgr show cluster)")
    return None


# scontrol's `Key=Value` pairs, several to a line; these keys take the rest of their line (a path or a comment may
# hold spaces)
_WHOLE_LINE_KEYS = ("Command=", "WorkDir=", "StdErr=", "StdIn=", "StdOut=", "Comment=", "Reason=", "Power=")
_PAIR = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9/:_.()-]*)=")


def parse_scontrol_job(text: str) -> dict[str, str]:
    """`scontrol show job ID` as KEY -> value (the first job when it lists several)."""
    fields: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if fields:
                break
            continue
        whole = next((k for k in _WHOLE_LINE_KEYS if line.startswith(k)), None)
        if whole is not None:
            fields.setdefault(whole[:-1], line[len(whole):].strip())
            continue
        marks = list(_PAIR.finditer(line))
        for i, m in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
            fields.setdefault(m.group(1), line[m.end():end].strip())
    return fields


def _cause(said: str) -> str | None:
    low = said.lower()
    return next((cause for words, cause in CAUSES if any(w in low for w in words)), None)


class Slurm:
    """Slurm's commands for one cluster (`-M NAME` when `cluster` is set)."""

    def __init__(self, cluster: str | None = None, run: Runner = subprocess.run,
                 which: Callable[[str], str | None] = shutil.which):
        self.cluster = cluster
        self._run = run
        self._which = which

    @property
    def available(self) -> bool:
        return self._which("squeue") is not None

    def _cluster_args(self) -> list[str]:
        return ["-M", self.cluster] if self.cluster else []

    def _call(self, argv: list[str], env: dict[str, str] | None = None, what: str = "") -> str:
        try:
            done = self._run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=env, check=False)
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]} is not installed here — run notes-tui on a login node of the cluster") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{argv[0]} did not answer within {COMMAND_TIMEOUT_S:g} s — the Slurm controller is busy "
                             "or down; try again in a minute") from None
        if done.returncode != 0:
            raise SlurmError(self._explain(argv[0], done.stderr or done.stdout, what))
        return done.stdout

    def _explain(self, command: str, stderr: str, what: str) -> str:
        lines = [ln.removeprefix(f"{command}: error: ").strip() for ln in stderr.strip().splitlines() if ln.strip()]
        said = "; ".join(lines)[:240] or "no message"
        if self.cluster and ("can't be reached" in said or "Problem talking to database" in said):
            return (f"{command} -M {self.cluster}: Slurm cannot reach cluster {self.cluster!r} ({said}) — -M needs "
                    "slurmdbd accounting: check the name with sacctmgr list clusters, or remove cluster from [slurm] "
                    "in the user config on a one-cluster site")
        cause = _cause(said)
        if cause is not None:  # Slurm itself is not working here: no job option would help
            return f"{command} could not get {what or 'an answer'}: {said} — {cause}"
        if command == "sbatch":
            return (f"sbatch refused {what or 'the job'}: {said} — check the profile's (or [slurm.run]'s) partition, "
                    "mem, cpus and gres against what the cluster offers: sinfo -o \"%P %c %m %G\"")
        return f"{command} refused {what or 'the request'}: {said}"

    def server_jobs(self) -> list[ServerJob]:
        """This user's server jobs, one squeue call. Prefer `ServerJobs.get()`, which rations the calls."""
        return self.queue()[0]

    def queue(self) -> tuple[list[ServerJob], set[str]]:
        """This user's server jobs, and the ids of all their jobs in the queue (a pull job too): one squeue call."""
        argv = ["squeue", *self._cluster_args(), "--me", "-h", "-o", SQUEUE_FORMAT]
        out = self._call(argv, what="the job list")
        return parse_squeue(out, self.cluster), queue_ids(out)

    def submit(self, script: str, options: Sequence[str], env: dict[str, str] | None = None,
               args: Sequence[str] = ()) -> str:
        argv = ["sbatch", "--parsable", *self._cluster_args(), *options, script, *args]
        out = self._call(argv, env=env, what="the job")
        try:
            return parse_sbatch(out)
        except ValueError as exc:
            raise SlurmError(f"sbatch: {exc} — is this Slurm ≥ 20.11?") from None

    def cancel(self, job_id: str) -> None:
        self._call(["scancel", *self._cluster_args(), job_id], what=f"job {job_id}")

    def sacct(self, args: Sequence[str]) -> str:
        """`sacct [-M CLUSTER] ARGS`: Slurm's accounting of jobs past and present, its times in the standard format
        whatever the user's SLURM_TIME_FORMAT. AccountingUnavailable where sacct cannot answer at all."""
        if self._which("sacct") is None:
            raise AccountingUnavailable(ACCOUNTING_MISSING)
        argv = ["sacct", *self._cluster_args(), *args]
        env = dict(os.environ, SLURM_TIME_FORMAT="standard")
        try:
            done = self._run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=env, check=False)
        except FileNotFoundError:
            raise AccountingUnavailable(ACCOUNTING_MISSING) from None
        except subprocess.TimeoutExpired:
            raise AccountingUnavailable(f"sacct did not answer within {COMMAND_TIMEOUT_S:g} s — Slurm's accounting "
                                        "database (slurmdbd) is busy or down; try again in a minute") from None
        if done.returncode != 0:
            why = accounting_cause(done.stderr or done.stdout or "")
            if why is not None:
                raise AccountingUnavailable(why)
            raise SlurmError(self._explain("sacct", done.stderr or done.stdout, "the job history"))
        return done.stdout

    def show_job(self, job_id: str) -> dict[str, str] | None:
        """`scontrol show job ID` as KEY -> value (StdOut, Command, WorkDir, TRES…); None once Slurm has forgotten the
        job (MinJobAge after it ended) or when scontrol cannot say."""
        try:
            out = self._call(["scontrol", *self._cluster_args(), "show", "job", job_id], what=f"job {job_id}")
        except SlurmError:
            return None
        return parse_scontrol_job(out) or None

    def batch_script(self, job_id: str) -> str:
        """The script the job runs, as Slurm stored it at submission (`scontrol write batch_script ID -`)."""
        return self._call(["scontrol", *self._cluster_args(), "write", "batch_script", job_id, "-"],
                          what=f"the script of job {job_id}")

    def set_comment(self, job_id: str, comment: str) -> None:
        """From inside the job: publish where the server listens."""
        self._call(["scontrol", *self._cluster_args(), "update", f"JobId={job_id}", f"Comment={comment}"],
                   what=f"the comment of job {job_id}")


class ServerJobs:
    """The user's server jobs, with at most one squeue call every `min_interval_s` however many callers ask
    (hold one per process: `shared_jobs`). A failed squeue keeps the last list and says why in `error`."""

    def __init__(self, slurm: Slurm, min_interval_s: float = SQUEUE_MIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.slurm = slurm
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.jobs: list[ServerJob] = []
        self.job_ids: set[str] | None = None  # every job of the user in the queue, from the same call
        self.error: str | None = None
        self.fetched_at: float | None = None
        self.fetched_wall: float | None = None  # time.time() of that call
        self.calls = 0
        self._lock = threading.Lock()
        self._stale = False

    @property
    def available(self) -> bool:
        return self.slurm.available

    def get(self) -> list[ServerJob]:
        """Blocking (one squeue, ~50 ms) when the list is older than the interval; run it in a worker thread."""
        if not self.slurm.available:
            return []
        with self._lock:
            fresh = self.fetched_at is not None and self.clock() - self.fetched_at < self.min_interval_s
            if fresh and not self._stale:
                return list(self.jobs)
            self.calls += 1
            self.fetched_at = self.clock()
            self.fetched_wall = time.time()
            self._stale = False
            try:
                self.jobs, self.job_ids = self.slurm.queue()
                self.error = None
            except SlurmError as exc:
                self.error = str(exc)
            return list(self.jobs)

    def age_s(self) -> float | None:
        return None if self.fetched_at is None else self.clock() - self.fetched_at

    def expire(self) -> None:
        """After our own sbatch/scancel: the next get() asks squeue again (once)."""
        self._stale = True

    def find(self, job_id: str) -> ServerJob | None:
        return next((j for j in self.get() if j.job_id == job_id), None)

    def in_queue(self, job_id: str, since: float = 0.0) -> bool | None:
        """Is this job of the user (any job, not only a server job) in the queue? Asks squeue again (once) when the
        last answer is older than `since` (time.time(): a job submitted after it is not in it). None when Slurm
        cannot say. Blocking: from a worker."""
        if not self.slurm.available:
            return None
        if self.fetched_wall is None or self.fetched_wall < since:
            self.expire()
        self.get()
        if self.error is not None or self.job_ids is None:
            return None
        return job_id in self.job_ids


_shared: dict[str | None, ServerJobs] = {}
_shared_lock = threading.Lock()


def shared_jobs(cluster: str | None = None) -> ServerJobs:
    """The process's one ServerJobs per cluster, so every screen and command shares the 15 s ration."""
    with _shared_lock:
        jobs = _shared.get(cluster)
        if jobs is None:
            jobs = _shared[cluster] = ServerJobs(Slurm(cluster))
        return jobs


def in_slurm_job(environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get("SLURM_JOB_ID") or None
