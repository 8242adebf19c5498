"""Runs against a server that behaves like a current Ollama (0.13.1: reasoning models think by default, cloud
models, `truncate`) and like the SOP's 0.11.10, side by side where the behaviour differs."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.helpers.runhelp import cli, journal_records, ledger_runs
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import StandinOllama

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
CURRENT = "0.13.1"
N = 12


def make_db(path, n=N, long_ids=()):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    rows = [(i, ("CT ABDOMEN. " + "Long findings paragraph with many words. " * 300) if i in long_ids
             else f"CHEST X-RAY {i}: findings {'consolidation' if i % 3 else 'clear'}.") for i in range(n)]
    conn.executemany("INSERT INTO notes VALUES (?, ?)", rows)
    conn.commit()
    conn.close()


def write_exp(tmp_path, server, model="llama3", model_extra="", options=""):
    exp = tmp_path / "exp.toml"
    text = experiment_toml(source=SOURCE, hosts=[server.url], model=model, options=options)
    exp.write_text(text.replace("timeout_s = 10\n", f"timeout_s = 10\n{model_extra}\n", 1))
    return exp


def header(ledger_dir):
    return next(r["header"] for r in journal_records(ledger_dir) if r["type"] == "header")


def units(ledger_dir):
    return [u for rec in journal_records(ledger_dir) for u in rec.get("units", [])]


@pytest.fixture
def current():
    with StandinOllama(latency=0.01, slots=4, version=CURRENT, models=("llama3", "qwen3:8b", "gpt-oss:20b"),
                       cloud_models=("gpt-oss:120b-cloud", "deepseek-v3.1:671b")) as s:
        yield s


def test_a_reasoning_model_answers_validly_with_think_false_sent_explicitly(tmp_path, current, capsys, private_ledger):
    make_db(tmp_path / "notes.db")
    exp = write_exp(tmp_path, current, model="qwen3:8b")
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    stats = current.stats()
    assert stats["chat"] == N and stats["think_sent"] == N and stats["thinking_only"] == 0
    assert [u["outcome"] for u in units(private_ledger)] == ["valid"] * N
    server = header(private_ledger)["server"]
    assert server["kind"] == "ollama" and server["version"] == CURRENT and "thinking" in server["capabilities"]
    assert (server["think"], server["think_sent"], server["truncate_sent"]) == (False, False, False)
    assert header(private_ledger)["think"] is False
    # the context the server loaded the model with, asked after the first answer, is in the close record
    close = next(r for r in journal_records(private_ledger) if r["type"] == "close")
    assert close["facts"]["server"]["context_length"] == {current.url: 4096}
    assert set(close["facts"]["in_flight"][current.url]) == {"min", "median", "max"}  # the limit the run found
    shown = cli(capsys, "ledger", "show", ledger_runs(private_ledger)[0]["run_id"])[1]
    assert "false (sent)" in shown and "4096 tokens (as the server loaded the model)" in shown
    assert "(min/median/max of the limit the run found per host)" in shown
    assert "none: the model and every host are inside the cluster" in shown


def test_the_same_model_left_to_think_answers_only_in_its_thinking_and_the_run_says_why(tmp_path, current, capsys,
                                                                                      private_ledger):
    """What landed code did silently (292 notes, 0 valid, exit 0): now each answer is the 'thinking' outcome,
    retried then the fallback, the run exits 1 with one line naming the cause, and ledger show names it too."""
    make_db(tmp_path / "notes.db")
    exp = write_exp(tmp_path, current, model="qwen3:8b", model_extra="think = true")
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"notes-tui: no answer validated ({N} notes tried): the model answered only in its thinking")
    assert "set think = false" in last
    assert "completed" in out and f"invalid answers by reason: thinking {N}" in out
    assert {(u["outcome"], u["error"], u["attempts"]) for u in units(private_ledger)} == {("invalid", "thinking", 2)}
    assert current.stats()["thinking_only"] == 2 * N
    run = ledger_runs(private_ledger)[0]
    assert run["status"] == "completed"  # every note was tried: the ledger says so, the exit status says the rest
    shown = cli(capsys, "ledger", "show", run["run_id"])[1]
    assert f"thinking {N} — the model answered only in its thinking" in shown
    doc = json.loads(cli(capsys, "ledger", "show", run["run_id"], "--json")[1])
    assert doc["invalid_reasons"] == {"thinking": N}


def test_think_is_never_sent_to_a_model_that_cannot_think_and_asking_for_it_is_one_line(tmp_path, current, capsys):
    make_db(tmp_path / "notes.db")
    exp = write_exp(tmp_path, current, model="llama3")
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    assert current.stats()["think_sent"] == 0 and current.stats()["bad_request_400"] == 0
    exp = write_exp(tmp_path, current, model="llama3", model_extra='think = "high"')
    code, out, err = cli(capsys, "--run", str(exp), "--rerun-invalid")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.think: llama3 does not think (its capabilities: completion, tools)" in err
    assert current.stats()["chat"] == N  # nothing more was sent


def test_a_thinking_level_is_sent_as_given(tmp_path, current, capsys, private_ledger):
    make_db(tmp_path / "notes.db", n=3)
    exp = write_exp(tmp_path, current, model="gpt-oss:20b", model_extra='think = "low"')
    code, out, err = cli(capsys, "--run", str(exp))
    assert current.stats()["think_sent"] == current.stats()["chat"] > 0
    assert header(private_ledger)["server"]["think_sent"] == "low"
    assert header(private_ledger)["prompt_hash"] != _hash_without_think(tmp_path, current, capsys)


def _hash_without_think(tmp_path, server, capsys):
    exp = write_exp(tmp_path, server, model="gpt-oss:20b")
    out = cli(capsys, "check", str(exp))[1]
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("prompt hash:"))


@pytest.mark.parametrize("model,why", [("gpt-oss:120b-cloud", "its tag says it runs on ollama.com"),
                                       ("deepseek-v3.1:671b", "the server lists it with remote host https://ollama.com")])
def test_a_cloud_model_is_refused_before_a_single_note(tmp_path, current, capsys, model, why):
    make_db(tmp_path / "notes.db")
    exp = write_exp(tmp_path, current, model=model)
    for args in (("--run", str(exp)), ("try", str(exp))):
        code, out, err = cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"model.name: {model} is a cloud model ({why}" in err and "allow_remote = true" in err
    assert current.stats()["chat"] == 0 and current.stats()["remote_chat"] == 0
    tables = sqlite3.connect(tmp_path / "notes.db").execute("select name from sqlite_master").fetchall()
    assert tables == [("notes",)]  # no results table, no lock record: nothing happened


def test_allow_remote_is_recorded_and_printed_in_every_report(tmp_path, current, capsys, private_ledger):
    make_db(tmp_path / "notes.db", n=4)
    exp = write_exp(tmp_path, current, model="deepseek-v3.1:671b", model_extra="allow_remote = true")
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    assert current.stats()["remote_chat"] == 4
    h = header(private_ledger)
    assert h["allow_remote"] is True and h["server"]["remote"] == "https://ollama.com:443"
    run_id = ledger_runs(private_ledger)[0]["run_id"]
    for fmt in ("md", "html", "csv"):
        report = cli(capsys, "ledger", "report", run_id, "--format", fmt)[1]
        assert "ALLOWED (allow_remote = true)" in report and "ollama.com" in report, fmt
    assert "ALLOWED (allow_remote = true)" in cli(capsys, "ledger", "show", run_id)[1]


@pytest.mark.parametrize("version,sent", [("0.11.10", None), (CURRENT, False)])
def test_truncation_is_counted_on_old_and_current_servers(tmp_path, capsys, private_ledger, version, sent):
    """Three notes longer than num_ctx: 0.11 cuts them and reports a full context (prompt_eval_count), current
    Ollama cuts them silently unless told `truncate: false`, which makes them errors. Either way the ledger's
    truncated count is 3, and on the current server the notes are refused rather than answered from half a note."""
    make_db(tmp_path / "notes.db", long_ids=(2, 5, 7))
    with StandinOllama(latency=0.0, version=version) as server:
        exp = write_exp(tmp_path, server, options="")
        exp.write_text(exp.read_text().replace("num_ctx = 4096", "num_ctx = 1024"))
        code, out, err = cli(capsys, "--run", str(exp))
        stats = server.stats()
    assert code == 0, err
    run = ledger_runs(private_ledger)[0]
    assert run["counts"]["truncated"] == 3
    assert header(private_ledger)["server"]["truncate_sent"] is sent
    long_units = {u["id"]: u for u in units(private_ledger) if u["truncated"]}
    assert sorted(long_units) == ["2", "5", "7"]
    if sent is False:
        assert stats["too_long_400"] == 3 and stats["truncated"] == 0
        assert {(u["outcome"], u["error"], u["attempts"]) for u in long_units.values()} == {("invalid", "too_long", 1)}
        shown = cli(capsys, "ledger", "show", run["run_id"])[1]
        assert "too_long 3 — the notes did not fit the model's context" in shown and "--rerun-invalid" in shown
    else:
        assert stats["truncated"] == 3 and stats.get("too_long_400", 0) == 0
        assert {u["outcome"] for u in long_units.values()} == {"valid"}


def test_try_shows_the_thinking_cause(tmp_path, current, capsys):
    make_db(tmp_path / "notes.db", n=3)
    exp = write_exp(tmp_path, current, model="qwen3:8b", model_extra="think = true")
    code, out, err = cli(capsys, "try", str(exp), "-n", "2")
    assert code == 0, err
    assert "INVALID after 2 attempts: thinking" in out
    assert "why invalid: the model answered only in its thinking" in out
