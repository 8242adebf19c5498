"""Credentials an experiment needs, from the environment or a .env file — never from the experiment file itself,
which goes into the ledger. They are `SecretStr` from the first read, so no repr or traceback can print them."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from app.errors import ConfigError
from app.experiment.schema import IDENT, ExperimentFile, SourceSection


@dataclass(frozen=True)
class MySQLCredentials:
    host: str
    port: int
    user: str
    password: SecretStr
    database: str


def server_api_key(path: Path, spec: ExperimentFile, environ: dict[str, str]) -> SecretStr:
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


def mysql_credentials(path: Path, source: SourceSection,
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
