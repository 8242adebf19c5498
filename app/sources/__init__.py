"""Note sources. `open_source` imports only the driver the experiment needs."""

from __future__ import annotations

from app.experiment import Experiment
from app.sources.base import ResultRow, RunStamp, Source, SourceSurvey, Unit

__all__ = ["open_source", "ResultRow", "RunStamp", "Source", "SourceSurvey", "Unit"]


def open_source(exp: Experiment) -> Source:
    if exp.spec.source.kind == "sqlite":
        from app.sources.sqlite import SqliteSource

        return SqliteSource(exp)
    from app.sources.mysql import MySQLSource

    return MySQLSource(exp)
