"""Note sources. `open_source` imports only the driver the experiment needs."""

from __future__ import annotations

from app.experiment import Experiment
from app.sources.base import ResultRow, RunStamp, Source, SourceSurvey, Unit

__all__ = ["open_source", "todo_count", "ResultRow", "RunStamp", "Source", "SourceSurvey", "Unit"]


def open_source(exp: Experiment) -> Source:
    if exp.spec.source.kind == "sqlite":
        from app.sources.sqlite import SqliteSource

        return SqliteSource(exp)
    from app.sources.mysql import MySQLSource

    return MySQLSource(exp)


def todo_count(exp: Experiment, rerun_invalid: bool = False, shard: tuple[int, int] | None = None) -> int:
    """How many units the experiment (or one shard of it) has still to do; opens and closes its own connection."""
    source = open_source(exp)
    try:
        source.shard = shard
        return source.survey(rerun_invalid).todo
    finally:
        source.close()
