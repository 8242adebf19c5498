"""Runs end to end on real SQLite files against the stand-in Ollama server, through the real `ollama` client."""

from __future__ import annotations

import re
import sqlite3

import pytest

from tests.helpers.notes import SOURCE, make_db, results
from tests.helpers.runhelp import cli, journal_records, ledger_runs
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import StandinOllama


@pytest.fixture
def server():
    with StandinOllama(latency=0.01, slots=4) as s:
        yield s


def write_exp(tmp_path, server, **kw):
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=kw.pop("source", SOURCE), hosts=[server.url], **kw))
    return exp


def test_full_run_then_second_run_does_nothing(tmp_path, server, capsys, private_ledger):
    make_db(tmp_path / "notes.db", n=30)
    exp = write_exp(tmp_path, server)
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    rows = results(tmp_path / "notes.db")
    assert [r["note_id"] for r in rows] == list(range(30))
    assert all(r["valid"] == 1 and r["attempts"] == 1 and r["experiment"] == "pna-test" for r in rows)
    assert {r["response"] for r in rows} <= {"(1) Likely", "(2) Unlikely", "(3) Unable to say"}
    assert "30/30 notes" in out and "completed" in out
    code, out, _ = cli(capsys, "--run", str(exp))
    assert code == 0 and "0 notes to do" in out
    assert len(results(tmp_path / "notes.db")) == 30
    runs = ledger_runs(private_ledger)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert sorted(r["counts"]["done"] if "counts" in r else r["done"] for r in runs) == [0, 30]
    assert server.stats()["chat"] == 30


def test_invalid_answers_are_retried_then_written_as_fallback(tmp_path, server, capsys):
    make_db(tmp_path / "notes.db", n=12)
    server.configure(invalid_rate=1.0)
    exp = write_exp(tmp_path, server)
    code, out, err = cli(capsys, "--run", str(exp))
    # every note tried, none valid: the run is completed in the ledger but not a success a script should trust
    assert code == 1 and "completed" in out
    assert err.strip().splitlines()[-1].startswith("notes-tui: no answer validated (12 notes tried): the answers")
    assert "invalid answers by reason: " in out
    rows = results(tmp_path / "notes.db")
    assert len(rows) == 12
    assert all(r["valid"] == 0 and r["attempts"] == 2 for r in rows)
    assert {r["response"] for r in rows} == {"(4) LLM output invalid"}
    assert {r["explanation"] for r in rows} == {"LLM output failed validation."}
    assert server.stats()["chat"] == 24
    # --rerun-invalid answers them again once the server behaves
    server.configure(invalid_rate=0.0)
    code, out, _ = cli(capsys, "--run", str(exp), "--rerun-invalid")
    assert code == 0 and "12 notes to do" in out
    rows = results(tmp_path / "notes.db")
    assert len(rows) == 12 and all(r["valid"] == 1 and r["attempts"] == 1 for r in rows)


def test_hostile_rows_blob_null_empty_non_utf8_duplicate(tmp_path, server, capsys, private_ledger):
    hostile = [
        (100, "p", None),                          # NULL note
        (101, "p", ""),                            # empty
        (102, "p", "   \n\t "),                    # whitespace only
        (103, "p", b"Opacity \xff\xfe in the RLL"),  # bytes that are not UTF-8
        (104, "p", b"Normal chest.\x00 NUL inside"),
        (105, "p", "Emoji 🫁 and {braces} {note} %s in text"),
        (None, "p", "a note without an id"),
        (106, "p", "first copy of a duplicated id"),
        (106, "p", "second copy of a duplicated id"),
    ]
    make_db(tmp_path / "notes.db", n=3, extra_rows=hostile)
    conn = sqlite3.connect(tmp_path / "notes.db")  # TEXT holding bytes that are not UTF-8
    conn.execute("INSERT INTO notes VALUES (107, 'p', CAST(X'4f706163697479ff' AS TEXT))")
    conn.commit()
    conn.close()
    exp = write_exp(tmp_path, server)
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    rows = {r["note_id"]: r for r in results(tmp_path / "notes.db")}
    assert sorted(rows) == [0, 1, 2, 100, 101, 102, 103, 104, 105, 106, 107]
    for empty in (100, 101, 102):
        assert rows[empty]["valid"] == 0 and rows[empty]["attempts"] == 0 and rows[empty]["response"] is None
    for sent in (103, 104, 105, 106, 107):
        assert rows[sent]["valid"] == 1
    assert "1 notes have a NULL id column" in out
    assert "1 ids occur more than once" in out
    assert "3 bytes of note text were not UTF-8" in out
    units = {}
    for rec in journal_records(private_ledger):
        for u in rec.get("units", []):
            units.setdefault(u["id"], []).append(u)
    assert [u["outcome"] for u in units["100"]] == ["empty"]
    assert sorted((u["outcome"], u["error"]) for u in units["106"]) == [("error", "duplicate_id"), ("valid", None)]
    # a second run does nothing: the empty notes have their (invalid) row too
    code, out, _ = cli(capsys, "--run", str(exp))
    assert "0 notes to do" in out


def test_note_longer_than_num_ctx_is_flagged_truncated(tmp_path, server, capsys):
    make_db(tmp_path / "notes.db", n=2, extra_rows=[(50, "p", "FINDINGS: " + "patchy opacity. " * 2000)])
    exp = write_exp(tmp_path, server)
    code, out, _ = cli(capsys, "check", str(exp))
    assert code == 0 and "longest 32010 characters" in out and "1 notes look longer than num_ctx" in out
    code, out, _ = cli(capsys, "--run", str(exp))
    assert code == 0
    rows = {r["note_id"]: r for r in results(tmp_path / "notes.db")}
    assert rows[50]["truncated"] == 1 and rows[0]["truncated"] == 0
    assert "truncated 1" in out and "raise [model.options].num_ctx" in out


def test_group_by_joins_a_patients_notes_into_one_unit(tmp_path, server, capsys):
    make_db(tmp_path / "notes.db", n=20)
    source = ('kind = "sqlite"\npath = "notes.db"\ntable = "notes"\ngroup_by = ["patient"]\n'
              'order_by = ["note_id"]\ntext_column = "note_text"')
    exp = write_exp(tmp_path, server, source=source)
    code, out, _ = cli(capsys, "--run", str(exp))
    assert code == 0
    conn = sqlite3.connect(tmp_path / "notes.db")
    got = conn.execute("SELECT patient, valid FROM pna_results ORDER BY patient").fetchall()
    assert got == [(f"p{i}", 1) for i in range(5)]
    assert server.stats()["chat"] == 5


def test_503_storm_every_note_still_answered(tmp_path, capsys):
    make_db(tmp_path / "notes.db", n=60)
    # no queue at all: the third request the run starts with is refused (the limit then stays at 2)
    with StandinOllama(latency=0.02, slots=2, queue=0) as server:
        exp = write_exp(tmp_path, server, run="concurrency = 8")
        code, out, _ = cli(capsys, "--run", str(exp))
        stats = server.stats()
    assert code == 0
    assert stats["busy_503"] > 0
    rows = results(tmp_path / "notes.db")
    assert len(rows) == 60 and all(r["valid"] == 1 for r in rows)


def test_two_hosts_share_the_work(tmp_path, capsys, private_ledger):
    make_db(tmp_path / "notes.db", n=40)
    with StandinOllama(latency=0.05, slots=2) as a, StandinOllama(latency=0.05, slots=2) as b:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[a.url, b.url], run="concurrency = 3"))
        code, out, _ = cli(capsys, "--run", str(exp))
        sa, sb = a.stats()["chat"], b.stats()["chat"]
    assert code == 0 and sa + sb == 40 and sa >= 10 and sb >= 10
    assert len(results(tmp_path / "notes.db")) == 40


def test_server_errors_are_retried(tmp_path, capsys):
    make_db(tmp_path / "notes.db", n=20)
    with StandinOllama(latency=0.01, slots=4, error_rate=0.3, seed=3) as server:
        exp = write_exp(tmp_path, server)
        code, out, _ = cli(capsys, "--run", str(exp))
        assert server.stats()["errors_500"] > 0
    rows = results(tmp_path / "notes.db")
    # a note that failed four times in a row is left for the next run, never written as an answer
    assert all(r["valid"] == 1 for r in rows)
    assert code == 0


@pytest.mark.slow  # seconds of real time
def test_sigkill_mid_run_shows_crashed_and_a_rerun_completes(tmp_path, private_ledger):
    import signal
    import time

    from tests.helpers.runhelp import spawn_run

    make_db(tmp_path / "notes.db", n=60)
    with StandinOllama(latency=0.1, slots=2) as server:
        exp = write_exp(tmp_path, server, run="concurrency = 2", results='table = "pna_results"\nbatch_size = 5')
        proc = spawn_run(exp)
        deadline = time.time() + 20
        while time.time() < deadline and server.stats()["chat"] < 20:
            time.sleep(0.05)
        assert [r["status"] for r in ledger_runs(private_ledger)] == ["running"]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        assert [r["status"] for r in ledger_runs(private_ledger)] == ["crashed"]
        kept = len(results(tmp_path / "notes.db"))
        assert 0 < kept < 60
        proc = spawn_run(exp)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"{60 - kept} notes to do" in out
    rows = results(tmp_path / "notes.db")
    assert [r["note_id"] for r in rows] == list(range(60))
    assert sorted(r["status"] for r in ledger_runs(private_ledger)) == ["completed", "crashed"]


def test_check_reports_counts_model_and_the_first_prompt(tmp_path, server, capsys):
    make_db(tmp_path / "notes.db", n=7)
    exp = write_exp(tmp_path, server)
    code, out, err = cli(capsys, "check", str(exp))
    assert code == 0, err
    assert "7 notes to do" in out and "will be created on the first run" in out
    assert "llama3:latest digest" in out and "server 0.11.10" in out
    assert "first note to do: 0" in out
    assert "Does this note suggest pneumonia is a diagnosis? Note: CHEST X-RAY 0: findings clear." in out
    conn = sqlite3.connect(tmp_path / "notes.db")
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'pna_results'").fetchone() is None
    conn.close()
    assert "memory:" not in out  # the stand-in holds the model (its /api/ps lists it)
    # what the model needs on a GPU: the stand-in says llama3.1:8b's shape (128 KiB a token), num_ctx is 4096
    gpu = re.search(r"gpu:     (\d+\.\d) GB weights \+ 0\.5 GB KV cache a slot \(num_ctx 4096; 32 layers × 8 KV heads "
                    r"× 128, f16\): (\d+\.\d) GB with 1 slot, (\d+\.\d) GB with 4 slots — an estimate", out)
    assert gpu, out
    weights, one, four = map(float, gpu.groups())
    slot = 131_072 * 4096 / 1e9  # 0.537 GB
    assert abs(one - (weights + slot)) <= 0.1 and abs(four - (weights + 4 * slot)) <= 0.1
    server.configure(loaded=())  # nothing in memory: check says the run will load it first
    code, out, err = cli(capsys, "check", str(exp))
    assert code == 0 and f"memory:  not in memory on {server.url}: the run loads it first" in out, out


@pytest.mark.slow  # seconds of real time
def test_hung_and_dropped_requests_are_retried(tmp_path, capsys):
    make_db(tmp_path / "notes.db", n=30)
    with StandinOllama(latency=0.01, slots=8, hang_rate=0.1, drop_rate=0.15, seed=5) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url]).replace("timeout_s = 10", "timeout_s = 1"))
        code, out, err = cli(capsys, "--run", str(exp))
        stats = server.stats()
    assert stats["hung"] > 0 and stats["dropped"] > 0
    rows = results(tmp_path / "notes.db")
    assert code == 0, err
    assert [r["note_id"] for r in rows] == list(range(30)) and all(r["valid"] == 1 for r in rows)


def test_server_killed_mid_run_the_other_host_finishes(tmp_path, capsys):
    import threading

    from tests.standin.standin_ollama import spawn_standin

    make_db(tmp_path / "notes.db", n=60)
    a = spawn_standin(latency=0.05, slots=2)
    with StandinOllama(latency=0.05, slots=2) as b:
        try:
            exp = tmp_path / "exp.toml"
            exp.write_text(experiment_toml(source=SOURCE, hosts=[a.url, b.url], run="concurrency = 2"))
            timer = threading.Timer(0.6, a.kill)
            timer.start()
            code, out, err = cli(capsys, "--run", str(exp))
            timer.join()
        finally:
            a.stop()
    assert code == 0, err
    assert "host http://127.0.0.1" in out
    rows = results(tmp_path / "notes.db")
    assert [r["note_id"] for r in rows] == list(range(60)) and all(r["valid"] == 1 for r in rows)


@pytest.mark.slow  # seconds of real time
def test_no_server_left_stops_interrupted_and_a_rerun_completes(tmp_path, capsys, private_ledger):
    from tests.standin.standin_ollama import spawn_standin

    make_db(tmp_path / "notes.db", n=40)
    a = spawn_standin(latency=0.05, slots=2)
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=[a.url], run="concurrency = 2\ngive_up_s = 3"))
    try:
        import threading

        threading.Timer(0.5, a.kill).start()
        code, out, err = cli(capsys, "--run", str(exp))
    finally:
        a.stop()
    assert code == 1
    assert "interrupted (no server answered)" in out and "no Ollama server answered for 3 s" in out
    kept = len(results(tmp_path / "notes.db"))
    assert 0 < kept < 40
    with StandinOllama(latency=0.0) as b:
        exp.write_text(experiment_toml(source=SOURCE, hosts=[b.url]))
        code, out, _ = cli(capsys, "--run", str(exp))
    assert code == 0 and f"{40 - kept} notes to do" in out
    assert len(results(tmp_path / "notes.db")) == 40
    assert sorted(r["status"] for r in ledger_runs(private_ledger)) == ["completed", "interrupted"]


def test_query_source_with_where_limit_and_extra_columns(tmp_path, server, capsys):
    make_db(tmp_path / "notes.db", n=30)
    source = ('kind = "sqlite"\npath = "notes.db"\n'
              'query = "SELECT n.note_id, n.patient, n.note_text FROM notes n WHERE n.note_id % 2 = 0;"\n'
              'where = "note_id >= 10"\nlimit = 5\nid_columns = ["note_id"]\ntext_column = "note_text"\n'
              'columns = ["patient"]')
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=source, hosts=[server.url]).replace(
        "Note: {note}", "Patient {patient}. Note: {note}"))
    code, out, err = cli(capsys, "check", str(exp))
    assert code == 0, err
    assert "5 notes to do" in out and "Patient p0. Note: CHEST X-RAY 10" in out
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    assert [r["note_id"] for r in results(tmp_path / "notes.db")] == [10, 12, 14, 16, 18]


def test_a_failing_results_write_fails_the_run_cleanly_and_a_rerun_finishes(tmp_path, server, capsys, private_ledger):
    make_db(tmp_path / "notes.db", n=30)
    exp = write_exp(tmp_path, server, run="concurrency = 1", results='table = "pna_results"\nbatch_size = 5')
    code, out, err = cli(capsys, "--run", str(exp), "--limit", "1")  # creates the results table
    assert code == 0, err
    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON pna_results WHEN NEW.note_id = 17 "
                 "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    conn.commit()
    conn.close()
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 1
    assert "failed" in out and "disk says no" in out and "Traceback" not in err
    kept = [r["note_id"] for r in results(tmp_path / "notes.db")]
    assert 17 not in kept and len(kept) == len(set(kept))
    committed = [u["id"] for rec in journal_records(private_ledger) for u in rec.get("units", [])]
    assert sorted(int(i) for i in committed) == sorted(kept)  # the ledger never claims a row the table lacks
    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute("DROP TRIGGER refuse")
    conn.commit()
    conn.close()
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    assert [r["note_id"] for r in results(tmp_path / "notes.db")] == list(range(30))
    assert sorted(r["status"] for r in ledger_runs(private_ledger)) == ["completed", "completed", "failed"]


def test_cut_off_answers_and_a_flaky_model_are_retried_and_counted(tmp_path, capsys, private_ledger):
    make_db(tmp_path / "notes.db", n=40)
    with StandinOllama(latency=0.0, cutoff_rate=1.0) as server:
        exp = write_exp(tmp_path, server)
        code, out, err = cli(capsys, "--run", str(exp), "--limit", "5")
    assert code == 1 and "cut off at num_predict: raise [model.options].num_predict" in err  # none valid: the cause
    units = [u for rec in journal_records(private_ledger) for u in rec.get("units", [])]
    assert [(u["outcome"], u["error"], u["attempts"]) for u in units] == [("invalid", "cutoff", 2)] * 5
    with StandinOllama(latency=0.0, invalid_rate=0.5, seed=11) as server:
        exp = write_exp(tmp_path, server)
        code, out, _ = cli(capsys, "--run", str(exp))
    assert code == 0
    runs = ledger_runs(private_ledger)
    latest = next(r for r in runs if r["counts"]["total"] == 35)
    c = latest["counts"]
    assert c["retried"] > 0 and c["valid"] + c["invalid"] == 35
    rows = results(tmp_path / "notes.db")
    assert len(rows) == 40
    assert sum(1 for r in rows if r["valid"] and r["attempts"] == 2) > 0


def test_an_unwritable_ledger_refuses_to_start(tmp_path, server, capsys):
    make_db(tmp_path / "notes.db", n=3)
    exp = write_exp(tmp_path, server)
    blocked = tmp_path / "ledger-file"
    blocked.write_text("a file where a directory should be")
    code, out, err = cli(capsys, "--run", str(exp), "--ledger", str(blocked))
    assert code == 2 and "cannot write the ledger" in err and len(err.strip().splitlines()) == 1
    assert server.stats()["chat"] == 0


def test_a_journal_that_fails_mid_run_fails_the_run(tmp_path, server, capsys, monkeypatch):
    from ledger import Journal

    make_db(tmp_path / "notes.db", n=30)
    exp = write_exp(tmp_path, server, run="concurrency = 1", results='table = "pna_results"\nbatch_size = 5')
    calls = {"n": 0}
    real = Journal.append_units

    def failing(self, units, counts=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(self, units, counts)

    monkeypatch.setattr(Journal, "append_units", failing)
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 1
    assert "failed" in out and "the run journal cannot be written" in out and "No space left" in out
    assert len(results(tmp_path / "notes.db")) < 30


def test_a_second_sigint_stops_without_waiting_for_the_notes_in_flight(tmp_path, private_ledger):
    import signal
    import time

    from tests.helpers.runhelp import spawn_run

    make_db(tmp_path / "notes.db", n=10)
    with StandinOllama(latency=20.0, slots=2) as server:  # answers far slower than the 5 s grace
        exp = write_exp(tmp_path, server, run="concurrency = 2")
        proc = spawn_run(exp)
        deadline = time.time() + 20
        while time.time() < deadline and server.stats()["active"] < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        started = time.time()
        out, err = proc.communicate(timeout=30)
        waited = time.time() - started
    assert proc.returncode == 130, err
    assert "SIGINT again: saving now" in err and "2 notes still in flight were left for the next run" in out
    assert waited < 5.0  # it did not sit out the grace period
    assert results(tmp_path / "notes.db") == []
    assert [r["status"] for r in ledger_runs(private_ledger)] == ["interrupted"]


def test_done_never_exceeds_total_when_ids_repeat(tmp_path, server, capsys, private_ledger):
    """Three ids in five rows: the survey counts three notes to do, the read hands out five units (two copies, each a
    duplicate_id). The counts said "5/3 notes"; the copies now count in the total as they are met."""
    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, patient TEXT, note_text BLOB)")
    conn.executemany("INSERT INTO notes VALUES (?, 'p', ?)", [(1, "a"), (2, "b"), (2, "b again"), (3, "c"), (3, "c!")])
    conn.commit()
    conn.close()
    exp = write_exp(tmp_path, server)
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    assert "5/5 notes" in out and "5/3" not in out
    c = ledger_runs(private_ledger)[0]["counts"]
    assert (c["done"], c["total"], c["errors"]) == (5, 5, 2)


@pytest.mark.slow  # the stand-in's model loads for 3 s
def test_a_model_loading_on_the_first_request_is_not_taken_for_the_servers_pace(tmp_path, capsys):
    """Ollama loads a model on its first request: the first answers take seconds. The in-flight limit used to take
    that for the server's pace and keep every note of the run waiting in the server's queue (252 of 1,000 in
    bench.inflight's cold scenario); it restarts instead, and the queue stays at what a small server should have."""
    make_db(tmp_path / "notes.db", n=400)
    with StandinOllama(latency=0.05, slots=4, load_seconds=3.0) as server:
        exp = write_exp(tmp_path, server)
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 0, err
        assert server.stats()["max_queued"] <= 4
    assert len(results(tmp_path / "notes.db")) == 400


def test_the_models_load_before_the_first_note_is_in_the_runs_record(tmp_path, capsys, private_ledger):
    make_db(tmp_path / "notes.db", n=20)
    with StandinOllama(latency=0.01, slots=4, loaded=(), load_seconds=1.0) as server:
        exp = write_exp(tmp_path, server)
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 0, err
        run_id = ledger_runs(private_ledger)[0]["run_id"]
        code, shown, err = cli(capsys, "ledger", "show", run_id)
        assert code == 0, err
        host = server.url.split("://")[1]
        assert re.search(rf"model load +1\.\d s on {host} before the first note \(it was not in memory\)", shown), \
            shown
        make_db(tmp_path / "more.db", n=5)  # another run: the model is in memory now, nothing to load or say
        code, again, err = cli(capsys, "--run", str(write_exp(tmp_path, server, source=SOURCE.replace("notes.db",
                                                                                                        "more.db"))))
        assert code == 0 and "5/5 notes" in again, err
        assert "model load" not in again and "loading its model" not in again
