"""`notes-tui server …` and `notes-tui models …` as a script sees them: real processes, real exit codes, one line for
every mistake, a progress bar on a terminal and plain lines in a log."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import pytest

from tests.helpers.support import ROOT
from tests.standin.standin_ollama import StandinOllama


def cli_env(env: dict | None) -> dict:
    """This user's environment without CI and OLLAMA_HOST, and without the test Slurm: the server jobs the Slurm
    tests start meanwhile (same user, same queue) would show in `server list` and answer `models list`."""
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "OLLAMA_HOST")}
    e["SLURM_CONF"] = os.devnull  # squeue fails at once (a missing file: it retries for 60 s)
    e.update(env or {})
    return e


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = cli_env(env)
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def run_in_pty(*args: str, env: dict | None = None, answer: str | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run with a terminal as stdin/stdout/stderr; `answer` is typed once the process asks."""
    master, slave = os.openpty()
    e = cli_env(env)
    proc = subprocess.Popen([sys.executable, "-m", "app", *args], cwd=ROOT, env=e, stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if answer is not None and b"[y/N]" in out:
                os.write(master, answer.encode() + b"\n")
                answer = None
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(10), out.decode(errors="replace")


def one_error_line(res: subprocess.CompletedProcess, fragment: str) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("notes-tui: error: ") and fragment in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.fixture
def server():
    with StandinOllama(models=("llama3", "qwen2.5:7b"), loaded=("llama3",), pull_seconds=1.0) as s:
        yield s


def test_server_list_text_and_json_with_a_down_server(tmp_path, server):
    config = tmp_path / "user-config.toml"
    config.write_text(f'[[servers]]\nurl = "{server.url}"\nname = "gpu-a"\n\n[[servers]]\nurl = "127.0.0.1:9"\n')
    env = {"NOTES_TUI_CONFIG": str(config)}
    res = run_cli("server", "list", env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["SERVER", "FROM", "KIND", "STATE", "VERSION", "RTT", "LOADED"]
    assert lines[1].startswith("gpu-a") and " ollama  up " in lines[1] and "llama3:latest 4.7 GB until" in lines[1]
    assert "127.0.0.1:9" in lines[2] and "down: refused" in lines[2]
    doc = json.loads(run_cli("server", "list", "--json", env=env).stdout)
    assert [d["state"] for d in doc] == ["up", "down"] and doc[0]["name"] == "gpu-a"
    assert doc[0]["loaded"][0]["name"] == "llama3:latest" and doc[1]["reason"] == "refused"
    assert doc[0]["version"] == "0.11.10" and doc[0]["rtt_ms"] > 0 and doc[0]["kind"] == "ollama"


def test_server_add_saves_refuses_duplicates_and_bad_urls(tmp_path, server):
    config = tmp_path / "user-config.toml"
    env = {"NOTES_TUI_CONFIG": str(config)}
    res = run_cli("server", "add", server.url, "--name", "gpu-a", env=env)
    assert res.returncode == 0 and "saved" in res.stdout, res.stderr
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    one_error_line(run_cli("server", "add", server.url, env=env), "is already saved as 'gpu-a'")
    one_error_line(run_cli("server", "add", "gpu-n57", env=env), "'gpu-n57' is not a server address")
    res = run_cli("server", "add", "http://127.0.0.1:9", env=env)  # saved, with a note that it is down now
    assert res.returncode == 0 and "does not answer now (refused)" in res.stdout
    assert [d["url"] for d in json.loads(run_cli("server", "list", "--json", env=env).stdout)] == \
        [server.url, "http://127.0.0.1:9"]
    config.write_text("[[servers]]\nurl = 3\n")  # a broken config is one line too
    one_error_line(run_cli("server", "list", env=env), "servers[0].url")


@pytest.mark.slow  # seconds of real time
def test_host_is_chosen_or_asked_for_in_one_line(tmp_path, server):
    config = tmp_path / "user-config.toml"
    env = {"NOTES_TUI_CONFIG": str(config)}
    one_error_line(run_cli("models", "list", env=env), "no Ollama server is known")
    config.write_text(f'[[servers]]\nurl = "{server.url}"\n\n[[servers]]\nurl = "http://127.0.0.1:9"\n')
    line = one_error_line(run_cli("models", "list", env=env), "2 servers are known, say which: --host URL")
    assert server.url in line
    one_error_line(run_cli("models", "list", "--host", "nonsense host", env=env), "--host:")
    res = run_cli("models", "list", env={**env, "OLLAMA_HOST": server.url.removeprefix("http://")})
    assert res.returncode == 0 and "llama3:latest" in res.stdout  # $OLLAMA_HOST decides
    one_error_line(run_cli("models", "list", "--host", "http://127.0.0.1:9", env=env),
                   "does not answer (connection refused)")


@pytest.mark.slow  # seconds of real time
def test_models_list_show_and_json(server):
    res = run_cli("models", "--host", server.url, "list")  # the option before the subcommand works too
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "PARAMS", "QUANT", "FAMILY", "MODIFIED", "DIGEST"]
    assert lines[1].split()[:3] == ["llama3:latest", "4.7", "GB"] and "2 models, 8.8 GB of the 75.0 GB quota" in \
        lines[-1]
    doc = json.loads(run_cli("models", "list", "--host", server.url, "--json").stdout)
    assert [m["name"] for m in doc["models"]] == ["llama3:latest", "qwen2.5:7b"]
    shown = json.loads(run_cli("models", "show", "llama3", "--host", server.url, "--json").stdout)
    assert shown["context_length"] == 8192 and shown["license"] == "stand-in license" and shown["template"]
    text = run_cli("models", "show", "llama3", "--host", server.url).stdout
    assert "context length: 8192" in text and "--- template ---" in text
    one_error_line(run_cli("models", "show", "nope", "--host", server.url), "'nope' is not on")


@pytest.mark.slow  # seconds of real time
def test_pull_in_a_log_prints_plain_lines_and_exit_codes_say_what_happened(server):
    server.configure(pull_seconds=6.0)
    res = run_cli("models", "pull", "llama3.1:8b", "--host", server.url)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stdout and "\x1b" not in res.stdout  # a log gets lines, not a redrawn bar
    progress = [ln for ln in res.stdout.splitlines() if " / " in ln and "%" in ln]
    assert progress and "MB/s" in progress[0] and "ETA" in progress[0]
    assert res.stdout.splitlines()[-1].startswith("llama3.1:8b  pulled, 4.7 GB in ")
    assert "llama3.1:8b" in run_cli("models", "list", "--host", server.url).stdout
    server.configure(pull_seconds=0.5)
    one_error_line(run_cli("models", "pull", "no-such:1b", "--host", server.url), "is not in the registry")
    one_error_line(run_cli("models", "pull", "bad name!", "--host", server.url), "is not a model name")
    server.configure(pull_fail_at=0.5)
    res = run_cli("models", "pull", "mistral", "--host", server.url)
    assert res.returncode == 1 and "stopped the pull: max retries exceeded" in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1


def test_pull_on_a_terminal_draws_a_bar_and_flags_the_quota(tmp_path, server):
    config = tmp_path / "user-config.toml"
    config.write_text("[models]\nquota_gb = 6\n")
    server.configure(pull_seconds=2.0)
    code, out = run_in_pty("models", "pull", "llama3.1:8b", "--host", server.url,
                           env={"NOTES_TUI_CONFIG": str(config)})
    assert code == 0, out
    assert "\r\x1b[K[" in out and "#" in out and "MB/s" in out
    assert "warning: llama3.1:8b: 13.5 GB with this model, over the 6 GB quota" in out


def test_rm_asks_on_a_terminal_and_refuses_without_one(server):
    one_error_line(run_cli("models", "rm", "llama3", "--host", server.url), "without a terminal to ask — add --yes")
    code, out = run_in_pty("models", "rm", "llama3", "--host", server.url, answer="n")
    assert code == 1 and "delete llama3:latest (4.7 GB) from" in out and "not deleted" in out
    assert server.stats()["deleted"] == 0
    code, out = run_in_pty("models", "rm", "llama3", "--host", server.url, answer="y")
    assert code == 0 and "deleted llama3:latest (4.7 GB)" in out
    res = run_cli("models", "rm", "qwen2.5:7b", "--yes", "--host", server.url)
    assert res.returncode == 0 and server.stats()["deleted"] == 2
    one_error_line(run_cli("models", "rm", "qwen2.5:7b", "--yes", "--host", server.url), "is not on")


@pytest.mark.parametrize("args", [
    ["ledger", "list", "--json", "--ledger", "{d}"],
    ["ledger", "--ledger", "{d}", "list", "--json"],
    ["--ledger", "{d}", "ledger", "list", "--json"],
    ["ledger", "--json", "list", "--ledger", "{d}"],
    ["--ledger", "{d}", "ledger", "--json", "list"],
])
def test_ledger_option_works_where_it_is_typed(tmp_path, args, private_ledger):
    """The ledger named on the command line is the one read, wherever --ledger stands (an auditor's verify of a copy
    must not answer for another ledger): that ledger holds one run, the default one (private_ledger) none."""
    from ledger import Journal

    named = tmp_path / "led"
    Journal.create(named, {"experiment": "audited", "total": 0}).close("completed", {"done": 0, "total": 0})
    res = run_cli(*[a.format(d=named) for a in args])
    assert res.returncode == 0, res.stderr
    assert [r["experiment"] for r in json.loads(res.stdout)] == ["audited"]


@pytest.mark.parametrize("args", [["--ledger", "{d}", "ledger", "verify"], ["ledger", "--ledger", "{d}", "verify"],
                                  ["ledger", "verify", "--ledger", "{d}"]])
def test_verify_reads_the_ledger_it_is_given(tmp_path, args, private_ledger):
    from ledger import Journal

    named = tmp_path / "copy"
    Journal.create(named, {"experiment": "audited", "total": 0}).close("completed", {"done": 0, "total": 0})
    res = run_cli(*[a.format(d=named) for a in args])
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"ledger {named}: OK") and "checked: 1 sealed runs" in res.stdout


@pytest.mark.parametrize("argv,where", [
    (["--ledger", "L", "submit", "x.toml"], "L"), (["submit", "--ledger", "L", "x.toml"], "L"),
    (["submit", "x.toml", "--ledger", "L"], "L"), (["--ledger", "L", "server", "start", "--profile", "p"], "L"),
    (["server", "--ledger", "L", "start", "--profile", "p"], "L"), (["--workspace", "W", "server", "list"], "W"),
    (["server", "list", "--workspace", "W"], "W"), (["--ledger", "L", "ledger", "rebuild"], "L"),
    (["submit", "x.toml"], None), (["ledger", "list"], None),
])
def test_shared_options_are_parsed_at_every_level(argv, where):
    """set_defaults on the top parser used to rewrite the shared actions' default, so every subparser reset what the
    level above had parsed: `notes-tui --ledger L ledger verify` verified the default ledger."""
    from app.cli import build_parser

    args = build_parser().parse_args(argv)
    got = args.workspace if "--workspace" in argv else args.ledger
    assert got == where and args.json is False
