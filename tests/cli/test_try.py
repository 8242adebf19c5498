"""`notes-tui try`: a few notes through the real backend (here the stand-in), shown in full; nothing written."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys

import pytest

from app.experiment import load_experiment
from app.tryout import Gold, try_notes
from tests.helpers.notes import SOURCE, fill, make_db, results, sop_source
from tests.helpers.runhelp import cli
from tests.helpers.support import ROOT, experiment_toml, write_env
from tests.standin.standin_ollama import StandinOllama


@pytest.fixture
def exp(tmp_path):
    make_db(tmp_path / "notes.db", n=30)

    def write(server):
        path = tmp_path / "exp.toml"
        path.write_text(experiment_toml(source=SOURCE, hosts=[server.url], run="concurrency = 2"))
        return path

    return write


def tables(db) -> list[str]:
    conn = sqlite3.connect(db)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    return names


def test_invalid_answers_show_the_validation_error_and_nothing_is_written(tmp_path, exp, capsys, private_ledger):
    with StandinOllama(latency=0.0, slots=2, invalid_rate=1.0) as server:
        code, out, err = cli(capsys, "try", str(exp(server)), "-n", "3")
        chats = server.stats()["chat"]
    assert code == 0, err
    assert chats == 3 * 2  # max_attempts = 2, as a run would retry
    assert out.count("INVALID after 2 attempts") == 3
    assert "schema: response: Input should be '(1) Likely', '(2) Unlikely' or '(3) Unable to say'" in out
    assert "json: Invalid JSON" in out
    assert "--- reply (attempt 1 of 2, " in out and "--- note ---\nCHEST X-RAY 0: findings clear." in out
    assert "3 notes: 0 valid, 3 invalid (" in out
    assert tables(tmp_path / "notes.db") == ["notes"]  # the results table is not even created
    assert not private_ledger.exists()  # no journal, no feed, no index


def test_json_is_one_document_with_everything(tmp_path, exp, capsys):
    with StandinOllama(latency=0.0, slots=2) as server:
        code, out, err = cli(capsys, "try", str(exp(server)), "--json")
    assert code == 0, err
    doc = json.loads(out)  # one document: loads would fail on two
    assert doc["experiment"] == "pna-test" and doc["model"] == "llama3:latest" and doc["agreement"] is None
    assert [n["id"] for n in doc["notes"]] == ["0", "1", "2", "3", "4"]
    first = doc["notes"][0]
    assert first["outcome"] == "valid" and first["note"].startswith("CHEST X-RAY 0")
    assert json.loads(first["raw"]) == first["answer"]
    assert first["attempts"] == 1 and first["tokens_in"] > 0 and first["tokens_out"] > 0
    assert first["latency_ms"] >= 0 and first["truncated"] is False


def test_random_is_repeatable_and_id_picks_one_note(tmp_path, exp, capsys):
    with StandinOllama(latency=0.0, slots=2) as server:
        path = str(exp(server))
        ids = []
        for _ in range(2):
            code, out, err = cli(capsys, "try", path, "--random", "7", "--json")
            assert code == 0, err
            ids.append([n["id"] for n in json.loads(out)["notes"]])
        code, out, _ = cli(capsys, "try", path, "--random", "8", "--json")
        other = [n["id"] for n in json.loads(out)["notes"]]
        code, out, err = cli(capsys, "try", path, "--id", "17")
    assert ids[0] == ids[1] and len(set(ids[0])) == 5
    assert ids[0] != other and ids[0] != ["0", "1", "2", "3", "4"]
    assert code == 0, err
    assert "note 17: valid" in out and "CHEST X-RAY 17:" in out and "[1/1]" in out


def test_every_note_done_tries_the_first_notes_and_the_table_is_untouched(tmp_path, exp, capsys):
    with StandinOllama(latency=0.0, slots=2) as server:
        path = str(exp(server))
        assert cli(capsys, "--run", path)[0] == 0
        before = results(tmp_path / "notes.db")
        code, out, err = cli(capsys, "try", path, "-n", "2")
    assert code == 0, err
    assert "the first 2 notes (every note has an answer already)" in out
    assert results(tmp_path / "notes.db") == before


@pytest.mark.parametrize("args, problem", [
    (["--id", "999"], "no note with id '999'"),
    (["-n", "0"], "argument -n: must be at least 1"),
    (["--random", "x"], "argument --random: 'x' is not a whole number"),
    (["--id", "3", "--random", "1"], "--id tries one note"),
])
def test_mistakes_are_one_line_and_exit_2(tmp_path, exp, args, problem):
    with StandinOllama(latency=0.0, slots=2) as server:
        res = subprocess.run([sys.executable, "-m", "app", "try", str(exp(server)), *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and problem in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_agreement_with_gold_through_the_hook(tmp_path, exp, capsys):
    from app.tryout.report import report_lines

    with StandinOllama(latency=0.0, slots=2) as server:
        e = load_experiment(exp(server))
        first = try_notes(e, n=4)
        answers = {n.id: n.answer["response"] for n in first.notes}
        gold_labels = dict(answers, **{"1": "not this"})
        gold_labels.pop("3")
        seen_units = []

        def lookup(source, units):
            seen_units.extend(u.uid for u in units)
            return gold_labels

        report = try_notes(e, n=4, gold=Gold("response", lookup))
    assert seen_units == ["0", "1", "2", "3"]
    assert report.agreement == {"field": "response", "with_gold": 3, "compared": 3, "agree": 2, "rate": 0.6667,
                                "disagree": [{"id": "1", "gold": "not this", "answer": answers["1"]}]}
    assert [n.agrees for n in report.notes] == [True, False, True, None]
    text = "\n".join(report_lines(report))
    assert "agreement with gold (response): 2/3 = 67% (3 of 4 notes have gold)" in text
    assert "--- gold: not this (DIFFERS)" in text


@pytest.mark.mysql
def test_try_on_mysql_with_two_id_columns(tmp_path, mysql_db, capsys):
    db, connect = mysql_db
    fill(connect, 20)
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.0, slots=2) as server:
        path = tmp_path / "exp.toml"
        path.write_text(experiment_toml(source=sop_source(env.name), hosts=[server.url]))
        code, out, err = cli(capsys, "try", str(path), "--id", "1007|ACC00007", "--json")
        assert code == 0, err
        (note,) = json.loads(out)["notes"]
        code, out, err = cli(capsys, "try", str(path), "--random", "3", "-n", "4", "--json")
        assert code == 0, err
        sample = [n["id"] for n in json.loads(out)["notes"]]
        code, _, err = cli(capsys, "try", str(path), "--id", "1007|ACC99999")
    assert note["id"] == "1007|ACC00007" and note["note"].startswith("PORTABLE CHEST 7:")
    assert len(set(sample)) == 4 and all("|ACC" in s for s in sample)
    assert code == 2 and "no note with id '1007|ACC99999'" in err
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert [r[0] for r in cur.fetchall()] == ["PNA2_100_RadNotes"]
    conn.close()


def test_a_model_not_in_memory_is_loaded_first_and_the_latencies_are_the_models(tmp_path, exp, capsys):
    with StandinOllama(latency=0.05, slots=2, loaded=(), load_seconds=1.0) as server:
        code, out, err = cli(capsys, "try", str(exp(server)), "-n", "3")
        stats = server.stats()
    assert code == 0, err
    host = server.url.split("://")[1]
    assert re.search(rf"model load: 1\.\d s on {host} before the first note \(it was not in memory\)", out), out
    latency = float(out.split("median latency ")[1].split(" ms")[0])
    assert latency < 500  # the model's 50 ms, not the load's second
    assert stats["chat"] == 3 + 1  # the load, then the notes
