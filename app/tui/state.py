"""What the screens share, typed: the servers and server jobs, each server's models, the runs started here, the run
followed, and when that run needs each of its server jobs until. NotesApp owns one (`app.state`) and publishes its
signals when it changes; screens read it and change only what the user chose (the selected server, the run to follow).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.cluster.known import KnownServer
from app.cluster.models import ModelEntry
from app.cluster.slurm import ServerJob
from app.runs.detach import Detached


@dataclass
class StartedRun:
    """A run this app started ("run here"): a process of its own, which outlives the app."""

    detached: Detached
    experiment: str
    path: Path

    @property
    def running(self) -> bool:
        return self.detached.exit_code() is None


@dataclass
class ModelList:
    """What the Models screen knows of one server's models."""

    entries: list[ModelEntry] = field(default_factory=list)
    error: str | None = None
    loading: bool = False
    loaded_once: bool = False
    fetched_at: float = 0.0
    listed_at: float | None = None  # when the server last answered with its list (time.monotonic())


@dataclass(frozen=True)
class RunNeed:
    """The followed run needs a server job until `until` (time.monotonic()), at its recent rate."""

    run_id: str
    until: float

    def eta_s(self, now: float | None = None) -> float:
        return self.until - (time.monotonic() if now is None else now)


@dataclass
class TuiState:
    servers: list[KnownServer] = field(default_factory=list)
    selected_url: str | None = None  # a server's URL, or a server job's row key while it has no address yet
    job_list: list[ServerJob] = field(default_factory=list)  # the user's server jobs, from squeue
    jobs_error: str | None = None  # why the last squeue failed (job_list is then the last list it gave)
    jobs_asked: bool = False  # squeue has answered (or failed) once: before that, job_list says nothing
    idle: dict[str, Any] = field(default_factory=dict)  # job URL -> app.cluster.idle.IdleState, asked with squeue
    models: dict[str, ModelList] = field(default_factory=dict)  # by server URL
    started: dict[str, StartedRun] = field(default_factory=dict)  # by run id
    follow_run_id: str | None = None  # the run the Runs screen follows
    run_needs: dict[str, RunNeed] = field(default_factory=dict)  # by server job id: the Servers screen's warning

    def server(self, url: str | None) -> KnownServer | None:
        return next((s for s in self.servers if s.url == url), None)

    def job_of(self, url: str | None) -> ServerJob | None:
        return next((j for j in self.job_list if url and j.url == url), None)

    def job(self, job_id: str) -> ServerJob | None:
        return next((j for j in self.job_list if j.job_id == job_id), None)

    def model_list(self, url: str) -> ModelList:
        return self.models.setdefault(url, ModelList())

    def still_running_here(self) -> list[StartedRun]:
        return [r for r in self.started.values() if r.running]

    def run_needs_jobs(self, run_id: str, job_ids: list[str], eta_s: float) -> None:
        until = time.monotonic() + eta_s
        for job_id in job_ids:
            self.run_needs[job_id] = RunNeed(run_id, until)
