"""What every front end starts from: the workspace, the user config and the environment, read once and passed down
(the engine and the cluster code never read global state)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from app.cluster.known import KnownServer, known_servers
from app.cluster.slurm import ServerJobs, shared_jobs
from app.settings.files import config_path
from app.settings.user import UserConfig, load_user_config


@dataclass
class Context:
    workspace: Path
    config_path: Path
    config: UserConfig
    environ: dict[str, str] = field(default_factory=dict)

    def servers(self) -> list[KnownServer]:
        """Blocking when the server jobs are due for a squeue call (at most every 15 s): call it from a worker."""
        return known_servers(self.workspace, self.config, self.environ, self.jobs().get())

    def jobs(self) -> ServerJobs:
        """The user's Slurm server jobs, one squeue call per 15 s for the whole process; `.available` is False
        where there is no squeue (then `.get()` is [])."""
        return shared_jobs(self.config.slurm.cluster)

    def reload(self) -> None:
        self.config = load_user_config(self.config_path)


def load_context(workspace: str | Path | None = None, environ: dict[str, str] | None = None) -> Context:
    env = dict(os.environ if environ is None else environ)
    path = config_path(env)
    ws = Path(workspace).expanduser() if workspace else Path.cwd()
    if not ws.is_dir():
        from app.errors import UserError

        raise UserError(f"--workspace: {ws} is not a directory — give the folder that holds experiments/")
    return Context(workspace=ws.resolve(), config_path=path, config=load_user_config(path), environ=env)
