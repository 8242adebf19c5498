"""The experiment file's schema: its sections and keys as pydantic models, strict (an unknown key is an error) and
frozen. What one key cannot check alone is in `rules`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

DEFAULT_NUM_CTX = 8192  # long CT reports pass 4096 tokens; Ollama cuts silently above num_ctx

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
QUALIFIED_IDENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,63}\.)?[A-Za-z_][A-Za-z0-9_]{0,63}$")
NAME_MAX = 191  # the results table's experiment column (VARCHAR(191)), part of its unique key
RESERVED_RESULT_COLUMNS = {"valid", "attempts", "truncated", "experiment", "run_id", "model", "prompt_hash", "created_at"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Options(_Strict):
    """Decoding options sent with every request. Temperature and seed default to fixed values so labels repeat."""

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int = 0
    num_ctx: int = Field(DEFAULT_NUM_CTX, gt=0, le=1_048_576)
    num_predict: int = Field(512, gt=0, le=65_536)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, gt=0)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


SERVER_BACKENDS = ("ollama", "openai-compatible")  # backends that talk to servers (hosts, "auto", remote checks)
ThinkLevel = Literal["low", "medium", "high"]


class ModelSection(_Strict):
    backend: Literal["ollama", "openai-compatible", "llamacpp"] = "ollama"
    name: str | None = Field(None, min_length=1)
    hosts: list[str] | str | None = None
    gguf: str | None = None
    options: Options = Options()
    keep_alive: str | int = "10m"
    timeout_s: float = Field(300.0, gt=0)
    # Reasoning models think before they answer; current Ollama makes them think by default, and with a JSON schema
    # the answer then comes back empty. Off unless the experiment asks, and always sent explicitly where it applies.
    think: StrictBool | ThinkLevel = False
    # Notes never leave the cluster: a cloud model or a host outside it is refused unless this says the text is
    # public or synthetic. Recorded in the ledger and printed in every report.
    allow_remote: StrictBool = False
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # openai-compatible: bearer key


class PromptSection(_Strict):
    system: str = ""
    user: str = Field(min_length=1)


class AnswerField(_Strict):
    type: Literal["choice", "text", "bool", "int", "number"]
    description: str = ""
    choices: list[str] | None = None
    max_length: int | None = Field(None, gt=0, le=100_000)


class AnswerSection(_Strict):
    fields: dict[str, AnswerField] = Field(min_length=1)
    max_attempts: int = Field(2, ge=1, le=10)
    fallback: dict[str, str | int | float | bool] = {}


class SourceSection(_Strict):
    kind: Literal["sqlite", "mysql"]
    path: str | None = None
    seed_csv: str | None = None
    env_file: str | None = None
    database: str | None = None
    table: str | None = None
    query: str | None = None
    id_columns: list[str] = []
    text_column: str
    columns: list[str] = []
    where: str | None = None
    limit: int | None = Field(None, gt=0)
    group_by: list[str] = []
    order_by: list[str] = []


class ResultsSection(_Strict):
    table: str
    batch_size: int = Field(100, ge=1, le=10_000)


class RunSection(_Strict):
    concurrency: int | None = Field(None, ge=1, le=256)  # a cap: the run finds each server's own (engine/limit.py)
    grace_s: float = Field(15.0, ge=0)
    give_up_s: float = Field(60.0, gt=0)  # no server answered for this long: stop as interrupted


class EvaluationSection(_Strict):
    """Gold labels for `ledger eval` and `try`: a column of the source or a query, and how their values map to
    answer values (`map`, keys as text). `field` is the answer field to score (default: the only choice or bool)."""

    gold_column: str | None = None
    gold_query: str | None = None
    map: dict[str, str | bool | int | float] = {}
    field: str | None = None


class StudyPrompt(_Strict):
    """A prompt variant of a study: a key left out is [prompt]'s."""

    system: str | None = None
    user: str | None = Field(None, min_length=1)


class StudySection(_Strict):
    """One experiment over several models, prompt variants and repeats: every combination is a cell, run as a run
    of its own (app/experiment/study.py). Repeat r is sent with seed [model.options].seed + r - 1."""

    models: list[str] = []  # default: [model].name
    repeats: int = Field(1, ge=1, le=50)
    prompts: dict[str, StudyPrompt] = {}  # default: [prompt] alone, as the variant "base"


class ExperimentFile(_Strict):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    description: str = ""
    model: ModelSection
    prompt: PromptSection
    answer: AnswerSection
    source: SourceSection
    results: ResultsSection
    run: RunSection = RunSection()
    evaluation: EvaluationSection | None = None
    study: StudySection | None = None
