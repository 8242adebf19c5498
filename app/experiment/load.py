"""Loading an experiment file: TOML, then the schema, then the rules, then what lies around it (hosts, paths,
credentials). Every mistake a user can make in the file ends in a `ConfigError`: one line with the file, the key,
what is wrong and the fix."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ValidationError

from app.errors import ConfigError, key_part
from app.experiment.credentials import mysql_credentials, server_api_key
from app.experiment.hosts import own_server, resolve_hosts
from app.experiment.resolved import Experiment
from app.experiment.rules import check_rules
from app.experiment.schema import SERVER_BACKENDS, AnswerField, AnswerSection, ExperimentFile


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
    spec = check_rules(path, spec)

    warnings: list[str] = []
    hosts: tuple[str, ...] = ()
    gguf_path = None
    api_key = None
    m = spec.model
    own = own_server(environ) if m.backend in SERVER_BACKENDS else None  # in a `submit --with-server` job
    if m.backend in SERVER_BACKENDS:
        if not m.name:
            example = "llama3" if m.backend == "ollama" else "the model id the server lists in /v1/models"
            raise ConfigError(path, "model.name", f"the {m.backend} backend needs a model name",
                              f'add name = "{example}" to [model]')
        if m.gguf:
            raise ConfigError(path, "model.gguf", "gguf is for the embedded llamacpp backend",
                              "remove it; the server loads its own model")
        # a run in a `submit --with-server` job uses that job's server and no other
        hosts = (own,) if own else () if m.hosts == "auto" else resolve_hosts(path, m.hosts, environ, m.backend)
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
        api_key = server_api_key(path, spec, environ)

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
        mysql, warning = mysql_credentials(path, spec.source, environ)
        if warning:
            warnings.append(warning)
    return Experiment(path=path, toml_text=text, spec=spec, hosts=hosts, sqlite_path=sqlite_path,
                      seed_csv_path=seed_csv_path, gguf_path=gguf_path, mysql=mysql, api_key=api_key,
                      warnings=tuple(warnings), auto_hosts=m.backend in SERVER_BACKENDS and m.hosts == "auto" and not own)
