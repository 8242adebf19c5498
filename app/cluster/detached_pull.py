"""Pulls that outlive the app. Ollama stops a pull when the client that asked for it disconnects, so a pull the TUI
starts is driven by a process of its own: `notes-tui models pull NAME --host URL --progress-file F`, started in its
own session like a detached run (app.runs.detach), stdin from /dev/null: quitting the app, a killed app or a dropped
SSH connection (SIGHUP) leaves it pulling.

The pull process appends its state to F = `<ledger dir>/pulls/<id>.jsonl` (0600), one whole JSON object a line —
the fields of a `Pull` (state, phase, done, total, rate, error, wrong_name, over_quota), who drives it (host, pid, the
pid's start time) and when (`at`, time.time()) — at once when its state changes, at most every 0.25 s while progress
comes, and every second anyway (a heartbeat). Its output goes to `<id>.log` beside it. The app (`DetachedPulls`)
reads the new bytes of the files it follows every 0.5 s, reopening each so that NFS shows its current size, and keeps
one `Pull` per file; a reopened app picks the files up from the folder (the pulls still going, and those that ended
in the last day). `c` is SIGTERM to the process: it closes its HTTP stream (Ollama then stops the pull) and its last
line says cancelled.

A pull job (`models pull NAME --profile P`, app.cluster.pulljob) writes the same file from its node: its submitter's
first line names the job (`job_id`, pid null) while it is pending, which is alive as long as squeue lists the job
(`job_in_queue`, within the app's one squeue call per 15 s); the job's own lines carry its pid, host and
`models_dir`, the shared folder it pulls into, which is how the Models screen puts it beside the servers of that
folder.

One pull at a time per server, across processes: a pull process waits while an earlier pull of the same server (a
smaller id: ids are ULIDs) is queued or pulling and its process alive, reading those files every 0.5 s, so the queue
survives the app too. A pull whose file says queued or pulling but whose process is gone (killed, its node rebooted)
is STOPPED as of its last line. Files of pulls that ended more than 7 days ago are swept by the next app.

    pulls = DetachedPulls(ledger_dir, on_update, workspace=ws, environ=env)   # the same surface as PullQueue
    pulls.start()                      # on the event loop: picks up the folder, then follows
    pulls.add(url, name) -> Pull       # writes F's first line and starts the process
    pulls.cancel(pull)                 # SIGTERM
    await pulls.aclose()               # stops following; the pulls go on
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.backends.ollama import full_name
from app.cluster.models import ServerError
from app.cluster.pulls import CANCELLED, DONE, FAILED, PULLING, QUEUED, STOPPED, Pull, PullQueue, check_model_name
from ledger.ids import new_run_id
from ledger.journal import ensure_private_dir
from ledger.procinfo import pid_start_time, same_process_alive, this_host

ROOT = Path(__file__).resolve().parents[2]  # the checkout whose `app` the pull process imports
POLL_S = 0.5  # the app reads the files of the pulls it follows; a waiting pull process reads those ahead of it
SCAN_S = 5.0  # the app looks in the folder for pulls it does not know (another app, `models pull --progress-file`)
WRITE_EVERY_S = 0.25  # progress lines, at most this often
HEARTBEAT_S = 1.0  # a line at least this often: a pull on another host that stopped is told from a slow one by it
STALE_S = 15.0  # no line for this long from a process this host cannot see (another host, not started yet): gone
SHOW_ENDED_S = 24 * 3600.0  # a reopened app shows the pulls that ended (or stopped) this recently
SWEEP_S = 7 * 24 * 3600.0
TAIL_BYTES = 16384  # a file picked up is read from its end: its last line is its state
ACTIVE = (QUEUED, PULLING)
ENDED = (DONE, FAILED, CANCELLED)
SUFFIX = ".jsonl"


def pulls_dir(ledger_dir: str | Path) -> Path:
    return Path(ledger_dir) / "pulls"


def pull_command(name: str, url: str, progress_file: Path, workspace: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "app", "models", "pull", name, "--host", url, "--progress-file", str(progress_file)]
    if workspace is not None:
        cmd += ["--workspace", str(workspace)]
    return cmd


def _line(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class Tail:
    """The last whole line of an append-only progress file, reading only the bytes not seen yet (reopened on each
    read, so that NFS shows the file's current size)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.rest = b""
        self.record: dict | None = None

    def read(self) -> bool:
        """True when a new line came (then `record` is the newest); a missing or unreadable file changes nothing."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # not the file it was: read it anew
                    self.offset, self.rest = 0, b""
                if size == self.offset:
                    return False
                start, rest = self.offset, self.rest
                if size - start > TAIL_BYTES:
                    start, rest = size - TAIL_BYTES, None
                f.seek(start)
                chunk = f.read(size - start)
        except OSError:
            return False
        self.offset = start + len(chunk)
        lines = ((rest or b"") + chunk).split(b"\n")
        self.rest = lines.pop()
        if rest is None and lines:
            lines.pop(0)  # read from the middle of a line
        for raw in reversed(lines):
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("v") == 1:
                self.record = record
                return True
        return False


def read_progress(path: Path) -> dict | None:
    """A progress file's last state (for a look from outside: tests, scripts)."""
    tail = Tail(Path(path))
    tail.read()
    return tail.record


JobCheck = Callable[[dict], bool | None]  # is the Slurm job of this record in the queue? None: cannot say


def driver_alive(record: dict, now: float, host: str, job_check: JobCheck | None = None) -> bool:
    """Is the process that drives this pull still there? On this host, its pid (and the pid's start time, as pids
    get reused); a pull job not started yet (its submitter's line: a job id, no pid), while `job_check` finds the job
    in the queue; on another host, or before the process wrote its pid, a line newer than STALE_S."""
    pid = record.get("pid")
    if isinstance(pid, int) and record.get("host") == host:
        return same_process_alive(pid, record.get("pid_start"))
    if record.get("job_id") and not isinstance(pid, int) and job_check is not None:
        queued = job_check(record)
        return True if queued is None else queued
    return now - _num(record.get("at")) < STALE_S


def job_in_queue(record: dict) -> bool | None:
    """A pull job's record: is its job in the user's queue? The process's one squeue call per 15 s per cluster
    (asked again once when the answer predates the record). Blocking: from a worker."""
    from app.cluster.slurm import shared_jobs

    jobs = shared_jobs(record.get("cluster") or None)
    return jobs.in_queue(str(record["job_id"]), since=_num(record.get("at")))


# ---- the pull process's side ----

class ProgressFile:
    """The state of one pull, appended to its file as it changes."""

    def __init__(self, path: Path, url: str, name: str, clock: Callable[[], float] = time.time,
                 extra: dict | None = None):
        self.path = Path(path)
        self.clock = clock
        first = read_progress(self.path) or {}  # the app's line: when it was queued, and where it stands
        now = clock()
        pid = os.getpid()
        self.id = self.path.name.removesuffix(SUFFIX)
        self.record: dict = {
            "v": 1, "id": self.id, "url": url or first.get("url", ""), "name": name or first.get("name", ""),
            "host": this_host(), "pid": pid, "pid_start": pid_start_time(pid),
            "state": first.get("state") if first.get("state") in ACTIVE else QUEUED, "phase": first.get("phase", ""),
            "done": 0, "total": 0, "rate": None, "error": None, "wrong_name": False, "over_quota": None,
            "queued_at": first.get("queued_at") or now, "started_at": first.get("started_at"), "finished_at": None,
            "at": now, **(extra or {})}
        ensure_private_dir(self.path.parent)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.written = 0.0
        self.dirty = False
        self.flush()  # its pid, at once: the app can tell from now on whether it is alive

    def update(self, pull: Pull) -> None:
        """PullQueue's on_update: a line now when the state changed or the quota flag came, else within 0.25 s."""
        r, now = self.record, self.clock()
        urgent = pull.state != r["state"] or bool(pull.over_quota and not r["over_quota"])
        if pull.state == PULLING and r["started_at"] is None:
            r["started_at"] = now
        if pull.state in ENDED and r["finished_at"] is None:
            r["finished_at"] = now
        r.update(state=pull.state, phase=pull.phase, done=pull.done, total=pull.total, rate=pull.rate,
                 error=pull.error, wrong_name=pull.wrong_name, over_quota=pull.over_quota)
        if urgent or now - self.written >= WRITE_EVERY_S:
            self.flush()
        else:
            self.dirty = True

    def fail(self, error: str) -> None:
        now = self.clock()
        self.record.update(state=FAILED, error=error, rate=None, finished_at=now)
        self.flush()

    def flush(self) -> None:
        self.record["at"] = self.written = self.clock()
        self.dirty = False
        with contextlib.suppress(OSError):  # a full disk stops the file, not the pull
            os.write(self.fd, _line(self.record))

    async def keep(self) -> None:
        """What update() held back, within 0.25 s; and a line every second however quiet the pull."""
        while True:
            await asyncio.sleep(WRITE_EVERY_S)
            if self.dirty or self.clock() - self.written >= HEARTBEAT_S:
                self.flush()

    def close(self) -> None:
        os.close(self.fd)


def pulls_ahead(path: Path, url: str, skip: set[str] | None = None) -> list[str]:
    """The names of the pulls of `url` before this one (smaller id) in its folder that are queued or pulling and
    whose process is alive. `skip` remembers files that can never be ahead again (ended, another server)."""
    skip = set() if skip is None else skip
    try:
        names = sorted(n for n in os.listdir(path.parent) if n.endswith(SUFFIX) and n < path.name and n not in skip)
    except OSError:
        return []
    now, host, ahead = time.time(), this_host(), []
    for fname in names:
        record = read_progress(path.parent / fname)
        if record is None:
            continue
        if record.get("url") != url or record.get("state") in ENDED:
            skip.add(fname)
        elif record.get("state") in ACTIVE and driver_alive(record, now, host):
            ahead.append(str(record.get("name")))
    return ahead


async def pull_detached(path: Path, url: str, name: str, quota_bytes: int | None,
                        on_update: Callable[[Pull], None] = lambda _: None, progress: ProgressFile | None = None,
                        cancelled_before: Callable[[], bool] = lambda: False) -> Pull:
    """`models pull --progress-file F`: wait until no earlier pull of the server (beside F) is queued or pulling,
    pull, keep F current. SIGTERM or SIGINT cancels (the HTTP stream is closed: Ollama stops the pull; F's last line
    says cancelled). The command ignores SIGHUP before it calls this: the process has no terminal to lose.
    `cancelled_before`: whether a cancel came before this installed its handlers (the caller kept it)."""
    progress = progress or ProgressFile(path, url, name)

    def changed(pull: Pull) -> None:
        if pull.state == QUEUED:
            return  # the queue's word as it takes the pull, which is already its server's turn: no flicker
        progress.update(pull)
        on_update(pull)

    queue = PullQueue(changed, quota_bytes=quota_bytes)
    cancelled = asyncio.Event()

    def cancel() -> None:
        cancelled.set()
        queue.cancel_all()

    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, cancel)
    if cancelled_before():
        cancel()
    keeper = asyncio.create_task(progress.keep())
    try:
        if not await _wait_turn(progress, url, cancelled):
            pull = Pull(id=progress.id, url=url, name=name)
            pull.state = CANCELLED
            changed(pull)
            return pull
        pull = queue.add(url, name)
        await queue.wait()
        return pull
    finally:
        keeper.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)
        progress.flush()
        progress.close()


async def _wait_turn(progress: ProgressFile, url: str, cancelled: asyncio.Event) -> bool:
    """Until no earlier pull of the server is queued or pulling; False when cancelled meanwhile."""
    skip: set[str] = set()
    said = False
    while not cancelled.is_set():
        ahead = pulls_ahead(progress.path, url, skip)
        if not ahead:
            return True
        if not said:
            said = True
            progress.record.update(state=QUEUED, phase=f"after {ahead[0]}", started_at=None)
            progress.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cancelled.wait(), POLL_S)
    return False


# ---- the app's side ----

@dataclass
class _Followed:
    pull: Pull
    tail: Tail
    process: subprocess.Popen | None = None  # started by this app: its exit status is known exactly
    cancelling: bool = False
    seen_alive: bool | None = None  # the reader thread's last answer


class DetachedPulls:
    """The TUI's pulls, each driven by a process of its own that outlives the app; for the screens the same surface
    as PullQueue (`pulls`, `add`, `cancel`, `active`). `on_update(pull)` is called on the event loop at every
    change, then `on_batch()` once per read that changed something; the files are read in a thread."""

    def __init__(self, ledger_dir: str | Path, on_update: Callable[[Pull], None], *, workspace: Path | None = None,
                 environ: dict[str, str] | None = None, on_batch: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time, job_check: JobCheck | None = job_in_queue):
        self.dir = pulls_dir(ledger_dir)
        self.job_check = job_check
        self.on_update = on_update
        self.on_batch = on_batch
        self.workspace = workspace
        self.environ = environ
        self.clock = clock
        self.host = this_host()
        self.pulls: list[Pull] = []
        self._followed: dict[str, _Followed] = {}
        self._ignored: set[str] = set()  # files seen and not shown (ended long ago, unreadable): the reader's
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        self.polls = 0  # for the figures: reads of the followed files
        self.poll_s = 0.0  # and the CPU they took, in the reader thread

    # ---- the screens' surface ----
    def active(self) -> list[Pull]:
        return [p for p in self.pulls if p.active]

    def add(self, url: str, name: str) -> Pull:
        name = check_model_name(name)
        for other in self.pulls:
            if other.active and other.url == url and full_name(other.name) == full_name(name):
                raise ServerError(f"{name} is already {other.state} on {url}")
        first = not any(p.active and p.url == url for p in self.pulls)
        pull_id, now = new_run_id(), self.clock()
        pull = Pull(id=pull_id, url=url, name=name)
        if first:  # its process starts in a moment; shown as starting, not as queued behind nothing
            pull.state, pull.phase, pull.started_at = PULLING, "starting", now
        path, log = self.dir / f"{pull_id}{SUFFIX}", self.dir / f"{pull_id}.log"
        record = {"v": 1, "id": pull_id, "url": url, "name": name, "host": self.host, "pid": None, "pid_start": None,
                  "state": pull.state, "phase": pull.phase, "done": 0, "total": 0, "rate": None, "error": None,
                  "wrong_name": False, "over_quota": None, "queued_at": now, "started_at": pull.started_at,
                  "finished_at": None, "at": now}
        try:
            ensure_private_dir(self.dir)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, _line(record))
            finally:
                os.close(fd)
            process = self._spawn(name, url, path, log)
        except OSError as exc:  # a file named pulls, a folder that is not ours, a full disk: said, not swallowed
            with contextlib.suppress(OSError):
                path.unlink()
            raise ServerError(f"cannot start the pull of {name}: {exc.strerror or exc} in {self.dir} — fix that "
                              "folder, or point the app at another ledger (--ledger DIR)") from None
        with self._lock:
            self._followed[pull_id] = _Followed(pull, Tail(path), process)
        self.pulls.append(pull)
        self._poke()
        self.on_update(pull)
        return pull

    def _spawn(self, name: str, url: str, path: Path, log: Path) -> subprocess.Popen:
        env = dict(os.environ if self.environ is None else self.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            process = subprocess.Popen(pull_command(name, url, path, self.workspace), stdin=subprocess.DEVNULL,
                                       stdout=fd, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                       env=env)
        finally:
            os.close(fd)
        # its exit status is collected while the app runs (no zombie); after the app is gone, init does
        threading.Thread(target=process.wait, name=f"reap-pull-{path.stem}", daemon=True).start()
        return process

    def pid(self, pull: Pull) -> int | None:
        """The pid of the process that drives the pull, when it runs on this host."""
        f = self._followed.get(str(pull.id))
        if f is None:
            return None
        if f.process is not None:
            return f.process.pid
        record = f.tail.record or {}
        pid = record.get("pid")
        return pid if isinstance(pid, int) and record.get("host") == self.host else None

    def cancel(self, pull: Pull) -> bool:
        """SIGTERM to its process (queued: it stops waiting; pulling: it closes its stream and Ollama stops). The
        pull says cancelled once its process wrote so. A pull driven from another host cannot be: ServerError."""
        f = self._followed.get(str(pull.id))
        if f is None or not pull.active:
            return False
        if f.process is not None:
            f.cancelling = True
            if f.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    f.process.send_signal(signal.SIGTERM)
            self._poke()
            return True
        record = f.tail.record or {}
        pid = record.get("pid")
        if record.get("job_id"):  # SIGTERM to a process on a node is Slurm's to send
            raise ServerError(f"{pull.name} is pulled by Slurm job {record['job_id']} — cancel it with: scancel "
                              f"{'-M ' + record['cluster'] + ' ' if record.get('cluster') else ''}{record['job_id']}")
        if record.get("host") != self.host or not isinstance(pid, int):
            raise ServerError(f"{pull.name} is pulled from {record.get('host') or 'another host'}: cancel it there "
                              f"(kill -TERM {pid})" if isinstance(pid, int) else
                              f"{pull.name} is pulled from {record.get('host') or 'another host'}: cancel it there")
        if not same_process_alive(pid, record.get("pid_start")):
            return False  # gone meanwhile: its file says how it ended
        f.cancelling = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        self._poke()
        return True

    def cancel_all(self) -> None:
        for pull in self.active():
            with contextlib.suppress(ServerError):
                self.cancel(pull)

    # ---- following ----
    def start(self) -> None:
        """On the running event loop: the folder is read at once, then the active pulls every POLL_S."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._follow(), name="detached pulls")

    async def aclose(self) -> None:
        """Stop following (the pulls go on)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _follow(self) -> None:
        next_scan = 0.0
        while not self._closed:
            scan = time.monotonic() >= next_scan
            if scan:
                next_scan = time.monotonic() + SCAN_S
            assert self._wake is not None
            self._wake.clear()
            self.apply(await asyncio.to_thread(self.read, scan))
            wait = POLL_S if self.active() else max(0.0, next_scan - time.monotonic())
            # a poke (a pull added or cancelled) reads at once. Not asyncio.wait_for: on 3.11 it swallows a
            # cancellation that comes as the event is set (a pull cancelled, then the app quits), and the app hung
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({woken}, timeout=wait)
            finally:
                woken.cancel()

    def read(self, scan: bool = False) -> list[tuple[str, dict, bool, Tail | None]]:
        """Blocking (a thread): (id, last record, process alive, tail of a file found by the scan) for each followed
        pull that changed, and with `scan` for each pull file of the folder not known yet worth showing."""
        cpu = time.thread_time()
        with self._lock:
            followed = [(i, f) for i, f in self._followed.items() if f.pull.active]
            known = set(self._followed)
        now, out = self.clock(), []
        for pull_id, f in followed:
            # whether it is alive first, then its file: a process that is gone wrote its last line before it went
            if f.process is not None:
                alive: bool | None = f.process.returncode is None
            else:
                alive = driver_alive(f.tail.record, now, self.host, self.job_check) if f.tail.record else None
            changed = f.tail.read()
            record = f.tail.record
            if record is None:
                continue
            if alive is None:
                alive = driver_alive(record, now, self.host, self.job_check)
            if changed or alive != f.seen_alive:
                f.seen_alive = alive
                out.append((pull_id, record, alive, None))
        if scan:
            out += self._scan(known, now)
        self.polls += 1
        self.poll_s += time.thread_time() - cpu
        return out

    def _scan(self, known: set[str], now: float) -> list[tuple[str, dict, bool, Tail | None]]:
        out = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for fname in names:
            pull_id = fname.removesuffix(SUFFIX)
            if not fname.endswith(SUFFIX) or pull_id in known or pull_id in self._ignored:
                continue
            tail = Tail(self.dir / fname)
            tail.read()
            record = tail.record
            if record is None or not record.get("url") or not record.get("name"):
                if record is not None:
                    self._ignored.add(pull_id)
                continue
            alive = record.get("state") in ACTIVE and driver_alive(record, now, self.host, self.job_check)
            age = now - _num(record.get("at"))
            if alive or age < SHOW_ENDED_S:
                out.append((pull_id, record, alive, tail))
                continue
            self._ignored.add(pull_id)
            if age > SWEEP_S:
                for path in (tail.path, self.dir / f"{pull_id}.log"):
                    with contextlib.suppress(OSError):
                        path.unlink()
        return out

    def apply(self, changes: list[tuple[str, dict, bool, Tail | None]]) -> None:
        """On the event loop: the Pulls as their files say."""
        added = False
        for pull_id, record, alive, tail in changes:
            f = self._followed.get(pull_id)
            if f is None:
                if tail is None:
                    continue
                f = _Followed(Pull(id=pull_id, url=str(record["url"]), name=str(record["name"])), tail,
                              seen_alive=alive)
                with self._lock:
                    self._followed[pull_id] = f
                self.pulls.append(f.pull)
                added = True
            update_pull(f.pull, record, alive, f.cancelling)
            self.on_update(f.pull)
        if added:
            self.pulls.sort(key=lambda p: str(p.id))
        if changes and self.on_batch is not None:
            self.on_batch()


def update_pull(pull: Pull, record: dict, alive: bool, cancelling: bool = False) -> None:
    """The Pull as its file's last line says (`alive`: whether its driver is still there)."""
    state = record.get("state")
    if state not in (*ACTIVE, *ENDED):
        state = STOPPED
    pull.phase = str(record.get("phase") or "")
    pull.done, pull.total = int(_num(record.get("done"))), int(_num(record.get("total")))
    pull.rate = _num(record.get("rate")) if record.get("rate") is not None else None
    pull.error = record.get("error")
    pull.wrong_name = bool(record.get("wrong_name"))
    pull.over_quota = record.get("over_quota")
    pull.started_at = record.get("started_at")
    pull.finished_at = record.get("finished_at")
    if record.get("job_id"):
        pull.job_id = str(record["job_id"])
        pull.models_dir = str(record.get("models_dir") or "") or None
        pull.job_cluster = str(record.get("cluster") or "") or None
    if state in ACTIVE and not alive:  # its process is gone without a last word
        state = CANCELLED if cancelling else STOPPED
        pull.rate = None
        pull.finished_at = pull.stopped_at = _num(record.get("at")) or None
    pull.state = state
