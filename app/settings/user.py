"""The user's own settings, `~/.config/notes-tui/config.toml`: saved servers, the model quota, the Slurm cluster and
the server-job profiles (`slurm/config.example.toml` has the SOP's). A missing file means the defaults; a broken one
is one line naming the key."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import ConfigError
from app.server_url import server_url
from app.settings.files import write_private

DEFAULT_QUOTA_GB = 75.0  # the CRCD allowance for ~/.ollama (SOP 3.1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SavedServer(_Strict):
    url: str
    name: str | None = Field(None, min_length=1, max_length=40)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return server_url(value)


class ModelsSettings(_Strict):
    quota_gb: float = Field(DEFAULT_QUOTA_GB, gt=0)


SLURM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"  # partitions, clusters, accounts: never an option or a shell word
SLURM_TIME = r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$"  # what sbatch --time takes: M, M:S, H:M:S, D-H, D-H:M:S
DEFAULT_SERVER_COMMAND = "ollama serve"
DEFAULT_IDLE = "30m"  # a server job with no request for this long ends itself, freeing its GPU
_IDLE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
IDLE_FIX = "write it as 30m, 2h, 1h30m, 90s, or 0 for never"


def idle_seconds(text: str) -> int | None:
    """`30m`, `2h`, `1h30m`, `90s`, `1d` as seconds; `0` (or any zero) is None: never. ValueError with the fix."""
    value = str(text).strip().lower().replace(" ", "")
    if value.isdigit() and int(value) == 0:
        return None
    match = _IDLE.match(value)
    if not value or match is None:
        raise ValueError(f"{text!r} is not a duration — {IDLE_FIX}")
    d, h, m, s = (int(g or 0) for g in match.groups())
    total = d * 86400 + h * 3600 + m * 60 + s
    return total or None


class RunJobSettings(_Strict):
    """`[slurm.run]`: what `notes-tui submit` asks for a headless run (a CPU job: the servers do the GPU work)."""

    partition: str | None = Field(None, pattern=SLURM_NAME)
    account: str | None = Field(None, pattern=SLURM_NAME)
    time: str | None = Field(None, pattern=SLURM_TIME)
    mem: str | None = Field(None, pattern=r"^\d+[KMGT]?$")
    cpus: int | None = Field(None, ge=1, le=1024)
    signal_s: int = Field(120, ge=10, le=3600)  # TERM this long before the limit (it arrives up to 60 s earlier)
    extra: list[str] = []  # more sbatch options, e.g. ["--qos=short"]


class SlurmSettings(_Strict):
    cluster: str | None = Field(None, pattern=SLURM_NAME)  # passed as -M; leave out on a one-cluster site
    run: RunJobSettings = RunJobSettings()


SERVER_KINDS = ("ollama", "openai-compatible")
OPENAI_COMMANDS = ("vllm", "sglang", "llama-server", "llama_cpp.server")  # commands that start such a server


class Profile(_Strict):
    """`[profiles.NAME]`: one kind of server job (`notes-tui server start --profile NAME`): Ollama, or an
    OpenAI-compatible server (vLLM, SGLang, llama-server) whose command takes the port as {port}."""

    partition: str | None = Field(None, pattern=SLURM_NAME)
    account: str | None = Field(None, pattern=SLURM_NAME)
    gres: str | None = Field(None, pattern=r"^[A-Za-z0-9_:.,/-]+$")  # --gres, e.g. gpu:1 or gpu:a100:1
    gpus: str | None = Field(None, pattern=r"^[A-Za-z0-9_:.]+$")  # --gpus, where the site prefers it
    mem: str | None = Field(None, pattern=r"^\d+[KMGT]?$")
    cpus: int | None = Field(None, ge=1, le=1024)
    time: str | None = Field(None, pattern=SLURM_TIME)
    models_dir: str | None = None  # OLLAMA_MODELS; default ~/.ollama/models
    num_parallel: int | None = Field(None, ge=1, le=64)  # OLLAMA_NUM_PARALLEL
    command: str = Field(DEFAULT_SERVER_COMMAND, min_length=1)  # runs with OLLAMA_HOST=127.0.0.1:PORT and PORT set
    kind: Literal["ollama", "openai-compatible"] | None = None  # default: from the command (vllm serve → openai)
    # the server in a network namespace of its own, so no other user of the node reaches it (app/cluster/isolate.py);
    # false only on a node to yourself (extra = ["--exclusive"]) or to pull models through the job (it has no network)
    isolate: bool = True
    ready_timeout_s: float = Field(600.0, gt=0)  # a Singularity image on a cold node can take minutes
    # no request through the job's proxy for this long and the job ends itself ("0": never); server start --idle
    idle: str = DEFAULT_IDLE
    extra: list[str] = []  # more sbatch options, e.g. ["--constraint=l40s"]

    @field_validator("idle", mode="before")
    @classmethod
    def _idle(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # idle = 0 means never, as "0" does; any other bare number needs its unit
        if isinstance(value, str):
            try:
                idle_seconds(value)
            except ValueError:  # one line naming the key; the fix in it, as the generic one says little
                raise ValueError(f"{value!r} is not a duration ({IDLE_FIX})") from None
        return value

    @property
    def idle_s(self) -> int | None:
        """Seconds without a request before the job ends itself; None: never."""
        return idle_seconds(self.idle)

    @property
    def server_kind(self) -> str:
        if self.kind is not None:
            return self.kind
        return "openai-compatible" if any(word in self.command for word in OPENAI_COMMANDS) else "ollama"


class NetworkSettings(_Strict):
    """`[network]`: the site's own networks, for a site whose nodes have public addresses: a host in them is inside
    the cluster, so notes may go to it without allow_remote."""

    cluster_networks: list[str] = []

    @field_validator("cluster_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for text in value:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not a network; write it as 136.142.0.0/16") from None
        return value


class UserConfig(_Strict):
    servers: list[SavedServer] = []
    models: ModelsSettings = ModelsSettings()
    network: NetworkSettings = NetworkSettings()
    slurm: SlurmSettings = SlurmSettings()
    profiles: dict[str, Profile] = {}

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, value: dict[str, Profile]) -> dict[str, Profile]:
        for name in value:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$", name):
                raise ValueError(f"profile name {name!r}: use letters, digits, _ . - (it becomes the job name)")
        return value

    @property
    def quota_bytes(self) -> int:
        return int(self.models.quota_gb * 1e9)


def load_user_config(path: Path) -> UserConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UserConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read the file ({exc.__class__.__name__})", "check its permissions")
    return _parse(path, text)


def _parse(path: Path, text: str) -> UserConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}", "fix the syntax at that line")
    try:
        return UserConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(".[", "[")
        if err["type"] == "extra_forbidden":
            raise ConfigError(path, key, "unknown key", "check the spelling (see README.md, user config)") from None
        raise ConfigError(path, key, err["msg"].removeprefix("Value error, "), "see README.md, user config") from None


def save_server(path: Path, url: str, name: str | None = None) -> SavedServer:
    """Append a `[[servers]]` entry, keeping the user's own text and comments; refuse a URL already saved."""
    try:
        entry = SavedServer(url=url, name=name)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise ConfigError("server", "", problem, "write http://HOST:PORT, e.g. http://gpu-n57:48362") from None
    config = load_user_config(path)
    for saved in config.servers:
        if saved.url == entry.url:
            raise ConfigError(path, "servers", f"{entry.url} is already saved"
                              + (f" as {saved.name!r}" if saved.name else ""), "nothing to do")
        if entry.name and saved.name == entry.name:
            raise ConfigError(path, "servers", f"the name {entry.name!r} is already used for {saved.url}",
                              "choose another --name")
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"[[servers]]\nurl = {json.dumps(entry.url)}\n" + (f"name = {json.dumps(entry.name)}\n" if entry.name else "")
    new = old + ("\n" if old and not old.endswith("\n") else "") + ("\n" if old else "") + block
    _parse(path, new)  # never write a file we could not read back
    write_private(path, new)
    return entry


_TABLE = re.compile(r"^\s*\[")  # a table header, [x] or [[x]]: where a [[servers]] entry ends
_SERVERS = re.compile(r"^\s*\[\[\s*servers\s*\]\]\s*(#.*)?$")


def remove_server(path: Path, url: str) -> SavedServer:
    """Take the `[[servers]]` entry of `url` out of the user config, as `save_server` put it in: the rest of the text,
    its comments and the file's mode kept, written whole or not at all, and refused unless the file then reads back
    as the same settings less that one server. A config that is a symlink (kept with dotfiles) stays one."""
    target = path.resolve()
    config = load_user_config(target)
    index = next((i for i, s in enumerate(config.servers) if s.url == url), None)
    if index is None:
        raise ConfigError(path, "servers", f"{url} is not saved here", "nothing to remove")
    old = target.read_text(encoding="utf-8")
    lines = old.splitlines(keepends=True)
    tables = [i for i, line in enumerate(lines) if _TABLE.match(line)]
    new = None
    for n, start in enumerate(tables):
        end = tables[n + 1] if n + 1 < len(tables) else len(lines)
        if _SERVERS.match(lines[start]) and _entry_url(lines[start:end]) == url:
            last = end - 1  # the entry ends at its last key: blank lines and comments after it go with what follows
            while last > start and (not lines[last].strip() or lines[last].lstrip().startswith("#")):
                last -= 1
            after, blank_before = last + 1, start > 0 and not lines[start - 1].strip()
            if after < len(lines) and not lines[after].strip() and (start == 0 or blank_before):
                after += 1  # the blank line save_server put between entries goes with this one
            elif after == len(lines) and blank_before:
                start -= 1  # the last entry: the blank line before it goes too
            new = "".join(lines[:start] + lines[after:])
            break
    expected = config.model_copy(update={"servers": config.servers[:index] + config.servers[index + 1:]})
    if new is None or _parse(target, new) != expected:
        raise ConfigError(path, "servers", f"{url} could not be taken out of the file on its own",
                          "remove its [[servers]] entry with an editor")
    write_private(target, new, mode=target.stat().st_mode & 0o7777)
    return config.servers[index]


def _entry_url(lines: list[str]) -> str | None:
    """The URL of one `[[servers]]` entry's text, as SavedServer writes it; None if it does not read as one."""
    try:
        entry = tomllib.loads("".join(lines))["servers"][0]
        return server_url(entry["url"])
    except (tomllib.TOMLDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None
