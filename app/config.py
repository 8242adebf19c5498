"""The experiment file: a TOML document validated into an `Experiment`.

Every mistake a user can make in the file ends in a `ConfigError`: one line with the file, the key, what is wrong and
the fix. Credentials never enter the model as plain strings (`SecretStr`), so no repr or traceback can print them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, ValidationError

from app.errors import UserError
from app.server_url import server_url

DEFAULT_NUM_CTX = 8192  # long CT reports pass 4096 tokens; Ollama cuts silently above num_ctx

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
QUALIFIED_IDENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,63}\.)?[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED_RESULT_COLUMNS = {"valid", "attempts", "truncated", "experiment", "run_id", "model", "prompt_hash", "created_at"}


def key_part(name: str) -> str:
    """A key as the error line shows it: plain names as they are, anything else quoted (a key may hold a newline)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name, ensure_ascii=False)


class ConfigError(UserError):
    def __init__(self, path: Path | str, key: str, problem: str, fix: str = ""):
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem + (f" — {fix}" if fix else ""))


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


class ExperimentFile(_Strict):
    name: str = Field(min_length=1, max_length=191)
    description: str = ""
    model: ModelSection
    prompt: PromptSection
    answer: AnswerSection
    source: SourceSection
    results: ResultsSection
    run: RunSection = RunSection()
    evaluation: EvaluationSection | None = None


@dataclass(frozen=True)
class MySQLCredentials:
    host: str
    port: int
    user: str
    password: SecretStr
    database: str


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


def template_fields(template: str) -> tuple[str, ...]:
    """Names used as {name} in a template; raises ValueError for broken or fancy ({x!r}, {x:>9}) placeholders."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not IDENT.match(name) or spec or conversion:
            raise ValueError(f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a plain {{column}}")
        names.append(name)
    return tuple(dict.fromkeys(names))


def load_experiment(path: str | Path, environ: dict[str, str] | None = None, text: str | None = None) -> Experiment:
    """The experiment in the file at `path`; or, with `text`, the experiment in that text as if it were the file at
    `path` (relative paths resolve from there: how the ledger's recorded TOML of a run is read back)."""
    path = Path(path)
    environ = dict(os.environ if environ is None else environ)
    if text is None:
        text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}", "fix the syntax at that line")
    try:
        spec = ExperimentFile.model_validate(data)
    except ValidationError as exc:
        raise _explain(path, exc) from None
    return _resolve(path, text, spec, environ)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is not a TOML error
    except FileNotFoundError:
        raise ConfigError(path, "", "no such experiment file", "check the path (experiments live in experiments/*.toml)")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read the file ({exc.__class__.__name__})", "check its permissions and encoding")


def _explain(path: Path, exc: ValidationError) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = [key_part(str(p)) for p in err["loc"] if not isinstance(p, int)]
    # pydantic adds the union member's type name to the location; it means nothing to a user
    loc = [p for p in loc if p not in {"str", "int", "float", "bool", "list[str]"}]
    key = ".".join(loc)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = ".".join(loc[:-1])
        allowed = ", ".join(_allowed_keys(loc[:-1]))
        where = f"[{parent}]" if parent else "the top level"
        return ConfigError(path, key, f"unknown key in {where}{more}",
                           f"check the spelling; allowed keys: {allowed}")
    if kind == "missing":
        return ConfigError(path, key, f"required key is missing{more}", f"add {loc[-1]} = … to the file")
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return ConfigError(path, key, f"{err['msg'].rstrip('.')} (got {shown}){more}", "see the experiment reference in README.md")


def _allowed_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = ExperimentFile
    in_fields_table = False
    for part in loc:
        if in_fields_table:  # `part` is the name of an answer field
            model, in_fields_table = AnswerField, False
            continue
        fld = model.model_fields.get(part)
        if fld is None:
            return []
        if model is AnswerSection and part == "fields":
            in_fields_table = True
            continue
        # an optional section (`X | None`) is the model X
        models = [a for a in (fld.annotation, *get_args(fld.annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:
            return []
        model = models[0]
    return list(model.model_fields)


def _resolve(path: Path, text: str, spec: ExperimentFile, environ: dict[str, str]) -> Experiment:
    base = path.parent
    _check_answer(path, spec.answer)
    _check_source(path, spec.source)
    _check_prompt(path, spec)
    if not IDENT.match(spec.results.table.split(".")[-1]) or not QUALIFIED_IDENT.match(spec.results.table):
        raise ConfigError(path, "results.table", f"{spec.results.table!r} is not a plain table name",
                          "use letters, digits and _ (optionally database.table)")
    if spec.source.table and _same_table(spec.source.table, spec.results.table, spec.source.database):
        raise ConfigError(path, "results.table", f"{spec.results.table!r} is the notes table",
                          'name a table of its own for the answers, e.g. table = "pna_results"')
    taken = sorted(c for c in _unit_key_columns(spec.source) if c.lower() in RESERVED_RESULT_COLUMNS)
    if taken:
        raise ConfigError(path, "source.id_columns", f"id column {taken[0]!r} has the name of a column notes-tui "
                          "writes in the results table", "select it under another name in a query source "
                          f"(query = \"SELECT {taken[0]} AS {taken[0]}_id, …\")")
    clash = set(spec.answer.fields) & set(_unit_key_columns(spec.source))
    if clash:
        raise ConfigError(path, "answer.fields", f"field {sorted(clash)[0]!r} is also an id column",
                          "rename the answer field")
    if spec.evaluation is not None:
        spec = spec.model_copy(update={"evaluation": check_evaluation(path, spec, spec.evaluation)})

    warnings: list[str] = []
    hosts: tuple[str, ...] = ()
    gguf_path = None
    api_key = None
    m = spec.model
    if m.backend in SERVER_BACKENDS:
        if not m.name:
            example = "llama3" if m.backend == "ollama" else "the model id the server lists in /v1/models"
            raise ConfigError(path, "model.name", f"the {m.backend} backend needs a model name",
                              f'add name = "{example}" to [model]')
        if m.gguf:
            raise ConfigError(path, "model.gguf", "gguf is for the embedded llamacpp backend",
                              "remove it; the server loads its own model")
        hosts = () if m.hosts == "auto" else _resolve_hosts(path, m.hosts, environ, m.backend)
    else:
        if m.gguf:
            gguf_path = (base / os.path.expanduser(m.gguf)).resolve()
            if not gguf_path.is_file():
                raise ConfigError(path, "model.gguf", f"no GGUF file at {gguf_path}",
                                  "fix the path, or remove gguf to use the bundled SmolLM2-135M-Instruct")
        # hosts left in a file switched to the embedded model are ignored, as they always were; a key is not
        if m.api_key_env is not None:
            raise ConfigError(path, "model.api_key_env", "api_key_env is for openai-compatible servers, not the "
                              "embedded llamacpp model", "remove it")
        if m.think is not False:
            raise ConfigError(path, "model.think", "the embedded model does not think",
                              "remove think, or use a reasoning model on a server")
    if m.api_key_env is not None:
        if m.backend != "openai-compatible":
            raise ConfigError(path, "model.api_key_env", "api_key_env is for openai-compatible servers",
                              "remove it (an Ollama server job is reached with its own token)")
        api_key = _api_key(path, spec, environ)

    sqlite_path = seed_csv_path = None
    mysql = None
    if spec.source.kind == "sqlite":
        if not spec.source.path:
            raise ConfigError(path, "source.path", "a sqlite source needs a path", 'add path = "notes.db" to [source]')
        if spec.source.env_file:
            raise ConfigError(path, "source.env_file", "env_file is for mysql sources", "remove it")
        sqlite_path = (base / os.path.expanduser(spec.source.path)).resolve()
        if spec.source.seed_csv:
            seed_csv_path = (base / os.path.expanduser(spec.source.seed_csv)).resolve()
            if not seed_csv_path.is_file():
                raise ConfigError(path, "source.seed_csv", f"no CSV file at {seed_csv_path}", "fix the path")
            if not spec.source.table:
                raise ConfigError(path, "source.seed_csv", "seed_csv fills a table", 'add table = "notes" to [source]')
    else:
        if spec.source.seed_csv:
            raise ConfigError(path, "source.seed_csv", "seed_csv is for sqlite sources", "remove it")
        if spec.source.path:
            raise ConfigError(path, "source.path", "path is for sqlite sources", "remove it; mysql uses DB_HOST etc.")
        mysql, warning = _mysql_credentials(path, spec.source, environ)
        if warning:
            warnings.append(warning)
    return Experiment(path=path, toml_text=text, spec=spec, hosts=hosts, sqlite_path=sqlite_path,
                      seed_csv_path=seed_csv_path, gguf_path=gguf_path, mysql=mysql, api_key=api_key,
                      warnings=tuple(warnings), auto_hosts=m.backend in SERVER_BACKENDS and m.hosts == "auto")


def _check_answer(path: Path, answer: AnswerSection) -> None:
    for name, fld in answer.fields.items():
        key = f"answer.fields.{key_part(name)}"
        if not IDENT.match(name):
            raise ConfigError(path, key, "field name is not a plain identifier", "use letters, digits and _")
        if name.lower() in RESERVED_RESULT_COLUMNS:
            raise ConfigError(path, key, f"{name!r} is a column notes-tui writes itself", "rename the field")
        if fld.type == "choice":
            if not fld.choices:
                raise ConfigError(path, key, "a choice field needs choices", 'add choices = ["yes", "no"]')
            if len(set(fld.choices)) != len(fld.choices):
                raise ConfigError(path, key + ".choices", "the same choice is listed twice", "remove the duplicate")
            if any(len(c) > 255 or not c.strip() for c in fld.choices):
                raise ConfigError(path, key + ".choices", "a choice is empty or longer than 255 characters",
                                  "shorten it")
        elif fld.choices is not None:
            raise ConfigError(path, key + ".choices", f"choices only apply to type = \"choice\", not {fld.type!r}",
                              "remove choices or change the type")
        if fld.type == "text" and fld.max_length is None:
            raise ConfigError(path, key + ".max_length", "a text field needs max_length",
                              "add max_length = 500 so constrained output always closes")
        if fld.type != "text" and fld.max_length is not None:
            raise ConfigError(path, key + ".max_length", "max_length only applies to text fields", "remove it")
    for name, value in answer.fallback.items():
        fld = answer.fields.get(name)
        key = f"answer.fallback.{key_part(name)}"
        if fld is None:
            raise ConfigError(path, key, "fallback for a field that is not in [answer.fields]",
                              f"use one of: {', '.join(answer.fields)}")
        expected = {"choice": str, "text": str, "bool": bool, "int": int, "number": (int, float)}[fld.type]
        if not isinstance(value, expected) or (fld.type in ("int", "number") and isinstance(value, bool)):
            raise ConfigError(path, key, f"fallback {value!r} does not fit a {fld.type} field",
                              "give a value of the field's type")


def _same_table(a: str, b: str, database: str | None) -> bool:
    """Do two table names (optionally database.table) name one table? Case-blind: it is a refusal, so err wide."""
    def parts(name: str) -> tuple[str | None, str]:
        db, _, table = name.rpartition(".")
        return (db or database or None), table

    (da, ta), (db_, tb) = parts(a.lower()), parts(b.lower())
    return ta == tb and (da is None or db_ is None or da == db_)


def _unit_key_columns(source: SourceSection) -> list[str]:
    return source.group_by or source.id_columns


def _check_source(path: Path, source: SourceSection) -> None:
    if bool(source.table) == bool(source.query):
        raise ConfigError(path, "source.table", "give exactly one of table or query",
                          "table = \"notes\" for a whole table, or query = \"SELECT …\"")
    if source.table and not QUALIFIED_IDENT.match(source.table):
        raise ConfigError(path, "source.table", f"{source.table!r} is not a plain table name",
                          "use letters, digits and _ (optionally database.table)")
    if source.query:
        _check_one_select(path, "source.query", source.query)
    if source.where is not None and (";" in source.where or not source.where.strip()):
        raise ConfigError(path, "source.where", "where must be one SQL condition without ';'",
                          'e.g. where = "note_date >= \'2024-01-01\'"')
    if source.group_by:
        if source.id_columns and source.id_columns != source.group_by:
            raise ConfigError(path, "source.id_columns", "with group_by, a unit is identified by the group",
                              "set id_columns equal to group_by, or leave id_columns out")
        extra = [c for c in source.columns if c not in source.group_by]
        if extra:
            raise ConfigError(path, "source.columns", f"column {extra[0]!r} differs between the notes of a group",
                              "with group_by, only group_by columns can be used in the prompt")
    elif not source.id_columns:
        raise ConfigError(path, "source.id_columns", "required key is missing",
                          'add id_columns = ["note_id"]: the columns that identify one note')
    if source.order_by and not source.group_by:
        raise ConfigError(path, "source.order_by", "order_by orders the notes inside a group", "add group_by, or remove it")
    for key in ("id_columns", "columns", "group_by", "order_by"):
        for col in getattr(source, key):
            if not IDENT.match(col):
                raise ConfigError(path, f"source.{key}", f"{col!r} is not a plain column name",
                                  "use letters, digits and _")
    if not IDENT.match(source.text_column):
        raise ConfigError(path, "source.text_column", f"{source.text_column!r} is not a plain column name",
                          "use letters, digits and _")
    if source.database is not None and not IDENT.match(source.database):
        raise ConfigError(path, "source.database", f"{source.database!r} is not a plain database name",
                          "use letters, digits and _")


def _check_one_select(path: Path, key: str, query: str) -> None:
    q = query.strip().rstrip(";").strip()
    if not re.match(r"(?is)^(select|with)\b", q) or ";" in q:
        raise ConfigError(path, key, "the query must be one SELECT statement",
                          "remove other statements; notes-tui adds its own joins around it")


EVALUATION_KEYS = {name: f"evaluation.{name}" for name in EvaluationSection.model_fields}


def check_evaluation(path: Path, spec: ExperimentFile, ev: EvaluationSection,
                     keys: dict[str, str] = EVALUATION_KEYS) -> EvaluationSection:
    """[evaluation] checked against the answer and the source, with `field` filled in. `keys` names each setting as
    the user gave it (a key of the file, or a command-line option that overrides it)."""
    if bool(ev.gold_column) == bool(ev.gold_query):
        raise ConfigError(path, keys["gold_column"], "give exactly one of gold_column or gold_query",
                          'gold_column = "gold_label" (a column of the source), or gold_query = "SELECT <id columns>, '
                          '<label> FROM …"')
    if ev.gold_column is not None:
        if not IDENT.match(ev.gold_column):
            raise ConfigError(path, keys["gold_column"], f"{ev.gold_column!r} is not a plain column name",
                              "use letters, digits and _")
        if spec.source.group_by:
            raise ConfigError(path, keys["gold_column"], "with group_by a unit is a group of notes, and a column can "
                              "differ between them", f"use gold_query returning {', '.join(spec.source.group_by)} and "
                              "one label per group")
    if ev.gold_query is not None:
        _check_one_select(path, keys["gold_query"], ev.gold_query)
    scorable = [n for n, f in spec.answer.fields.items() if f.type in ("choice", "bool")]
    name = ev.field
    if name is None:
        if len(scorable) != 1:
            raise ConfigError(path, keys["field"], "no choice or bool field to score" if not scorable else
                              f"several fields could be scored ({', '.join(scorable)})",
                              "add a choice or bool field to [answer.fields]" if not scorable else
                              f'add field = "{scorable[0]}" to [evaluation]')
        name = scorable[0]
    elif name not in scorable:
        raise ConfigError(path, keys["field"], f"{name!r} is not a choice or bool field of [answer.fields]",
                          f"use one of: {', '.join(scorable) or '(none: add a choice field)'}")
    fld = spec.answer.fields[name]
    for gold, value in ev.map.items():
        where = f"evaluation.map.{gold}" if keys is EVALUATION_KEYS else keys["map"]
        if fld.type == "choice" and value not in (fld.choices or []):
            raise ConfigError(path, where, f"{value!r} is not a choice of {name}",
                              f"map {gold!r} to one of: {', '.join(fld.choices or [])}")
        if fld.type == "bool" and not isinstance(value, bool):
            raise ConfigError(path, where, f"{value!r} is not true or false, and {name} is a bool field",
                              f"map {gold!r} to true or false")
    return ev.model_copy(update={"field": name})


def _check_prompt(path: Path, spec: ExperimentFile) -> None:
    try:
        fields = template_fields(spec.prompt.user)
    except ValueError as exc:
        raise ConfigError(path, "prompt.user", str(exc), "write {note} or {column}; write {{ and }} for literal braces")
    if "note" not in fields:
        raise ConfigError(path, "prompt.user", "the template never uses {note}", "put {note} where the note goes")
    available = {"note", *_unit_key_columns(spec.source), *spec.source.columns}
    for name in fields:
        if name not in available:
            raise ConfigError(path, "prompt.user", f"placeholder {{{name}}} is not provided by the source",
                              f"add {name!r} to [source].columns, or use one of: {', '.join(sorted(available))}")


def _resolve_hosts(path: Path, hosts: list[str] | str | None, environ: dict[str, str],
                   backend: str = "ollama") -> tuple[str, ...]:
    if isinstance(hosts, str):
        hosts = [hosts]
    if not hosts:
        env = environ.get("OLLAMA_HOST", "").strip() if backend == "ollama" else ""
        if not env:
            raise ConfigError(path, "model.hosts", f"no {'Ollama' if backend == 'ollama' else 'OpenAI-compatible'} "
                              "server given", 'add hosts = ["http://HOST:PORT"] to [model]'
                              + (" or export OLLAMA_HOST=HOST:PORT" if backend == "ollama" else ' (or "auto")'))
        hosts = [h.strip() for h in env.split(",") if h.strip()]
    out = []
    for h in hosts:
        try:
            # an OpenAI-compatible server is often given as its API root, http://node:8000/v1
            out.append(server_url(_without_v1(h) if backend == "openai-compatible" else h))
        except ValueError as exc:
            raise ConfigError(path, "model.hosts", str(exc), "write http://HOST:PORT, e.g. http://gpu-n57:48362")
    if len(set(out)) != len(out):
        raise ConfigError(path, "model.hosts", "the same host is listed twice", "remove the duplicate")
    return tuple(out)


def _without_v1(host: str) -> str:
    text = host.strip().rstrip("/")
    return text[:-3] if text.endswith("/v1") else text


def _api_key(path: Path, spec: ExperimentFile, environ: dict[str, str]) -> SecretStr:
    """The key an openai-compatible server wants, from the environment or a .env file (the source's env_file, else
    one beside the experiment): never from the experiment file itself, which goes into the ledger."""
    from dotenv import dotenv_values

    name = spec.model.api_key_env
    assert name
    value = environ.get(name)
    env_file = spec.source.env_file or ".env"
    env_path = (path.parent / os.path.expanduser(env_file)).resolve()
    if value is None and env_path.is_file():
        try:
            value = dotenv_values(env_path).get(name)
        except OSError:
            value = None
    if not value:
        raise ConfigError(path, "model.api_key_env", f"{name} is not set",
                          f"export {name}=… or put {name}=… in {env_path} (chmod 600)")
    return SecretStr(value)


def _mysql_credentials(path: Path, source: SourceSection,
                       environ: dict[str, str]) -> tuple[MySQLCredentials, str | None]:
    from dotenv import dotenv_values

    values = dict(environ)
    warning = None
    if source.env_file:
        env_path = (path.parent / os.path.expanduser(source.env_file)).resolve()
        if env_path.is_dir():
            raise ConfigError(path, "source.env_file", f"{env_path} is a directory",
                              "name the .env file itself, e.g. env_file = \"~/.env\"")
        try:
            mode = env_path.stat().st_mode
            file_values = dotenv_values(env_path)
        except FileNotFoundError:
            raise ConfigError(path, "source.env_file", f"no such file {env_path}",
                              "create it with DB_USER, DB_PASS, DB_HOST, DB_NAME (chmod 600)")
        except OSError as exc:
            raise ConfigError(path, "source.env_file", f"cannot read {env_path} ({exc.strerror})", "check permissions")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warning = f"warning: {env_path} is readable by others; protect your credentials with: chmod 600 {env_path}"
        # a file the user named explicitly wins over whatever the shell happens to export
        values.update({k: v for k, v in file_values.items() if v is not None})
    where = f"the .env file {source.env_file}" if source.env_file else "the environment (or name a .env file in env_file)"
    needed = ["DB_USER", "DB_PASS", "DB_HOST"] + ([] if source.database else ["DB_NAME"])
    for var in needed:
        if var not in values or (var != "DB_PASS" and not values[var].strip()):
            raise ConfigError(path, "source", f"{var} is not set", f"set {var}=… in {where}")
    port_text = values.get("DB_PORT", "3306").strip() or "3306"
    if not port_text.isdigit():
        raise ConfigError(path, "source", f"DB_PORT={port_text!r} is not a port number", "set DB_PORT=3306")
    database = source.database or values["DB_NAME"].strip()
    if not IDENT.match(database):
        raise ConfigError(path, "source", f"DB_NAME {database!r} is not a plain database name", "fix DB_NAME")
    return MySQLCredentials(host=values["DB_HOST"].strip(), port=int(port_text), user=values["DB_USER"].strip(),
                            password=SecretStr(values["DB_PASS"]), database=database), warning
