"""`Experiment`: a checked experiment file plus what was resolved around it (paths, hosts, credentials)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.experiment.credentials import MySQLCredentials
from app.experiment.schema import SERVER_BACKENDS, ExperimentFile
from app.experiment.study import StudyCell


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file plus what was resolved around it (paths, hosts, credentials)."""

    path: Path
    toml_text: str
    spec: ExperimentFile
    hosts: tuple[str, ...] = ()
    sqlite_path: Path | None = None
    seed_csv_path: Path | None = None
    gguf_path: Path | None = None
    mysql: MySQLCredentials | None = None
    api_key: SecretStr | None = None  # openai-compatible servers with a key of their own (api_key_env)
    warnings: tuple[str, ...] = field(default=())
    auto_hosts: bool = False  # hosts = "auto": the user's healthy server jobs, found at run start (app.cluster.auto)
    server_jobs: tuple[dict[str, Any], ...] = ()  # the Slurm server jobs behind hosts, for the ledger (GPU-hours)
    cell: StudyCell | None = None  # one cell of a study (app.experiment.study.study_cells), run as a run of its own

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uses_servers(self) -> bool:
        return self.spec.model.backend in SERVER_BACKENDS

    @property
    def source_label(self) -> str:
        """Where the notes are, for people: never credentials."""
        if self.sqlite_path is not None:
            return f"SQLite {self.sqlite_path}"
        if self.mysql is not None:
            return f"MySQL {self.mysql.host}:{self.mysql.port}/{self.mysql.database}"
        return self.spec.source.kind
