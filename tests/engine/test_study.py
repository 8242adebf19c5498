"""A study end to end against the stand-in Ollama (two models on one server): `check` lists the cells, `--run` runs
them grouped by model, each cell a ledger run keyed in the results table by its own experiment name; a rerun skips
complete cells and finishes an incomplete one; `ledger study` finds them all."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.helpers.runhelp import cli, ledger_runs
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import StandinOllama

GOLD = ["(1) Likely", "(2) Unlikely", "(3) Unable to say"]
STUDY = """
[study]
models = ["llama3.1:8b", "qwen2.5:7b-instruct"]
repeats = 2
[study.prompts.short]
[study.prompts.terse]
system = "Answer in JSON only."

[evaluation]
gold_column = "gold"
"""
SOURCE = ('kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
          '\ncolumns = []')


@pytest.fixture
def server():
    with StandinOllama(latency=0.005, slots=4, models=("llama3.1:8b", "qwen2.5:7b-instruct")) as s:
        yield s


def _notes(path, n=12):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT, gold TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)",
                     [(i, f"CHEST X-RAY {i}: {'consolidation' if i % 3 else 'clear'}.", GOLD[i % 3]) for i in range(n)])
    conn.commit()
    conn.close()


def _exp(tmp_path, server):
    _notes(tmp_path / "notes.db")
    exp = tmp_path / "study.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], name="pna-study", options="temperature = 0.7",
                                   extra=STUDY).replace("temperature = 0.0\n", ""))
    return exp


def _rows(db):
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT experiment, note_id, model, run_id FROM pna_results ORDER BY experiment, note_id").fetchall()
    conn.close()
    return rows


CELLS = [f"{m}/{p}/r{r}" for m in ("llama3.1:8b", "qwen2.5:7b-instruct") for p in ("short", "terse") for r in (1, 2)]


def test_check_lists_every_cell_in_the_order_they_run(tmp_path, server, capsys):
    exp = _exp(tmp_path, server)
    code, out, err = cli(capsys, "check", str(exp))
    assert code == 0, err
    assert "8 cells = 2 models × 2 prompts × 2 repeats" in out
    listed = [line.split()[1] for line in out.splitlines() if line.startswith("  ") and "requests" in line]
    assert listed == CELLS
    assert "96 requests in all" in out
    assert "model:   llama3.1:8b" in out and "model:   qwen2.5:7b-instruct" in out


def test_a_study_runs_each_cell_once_and_a_rerun_finishes_only_what_is_missing(tmp_path, server, capsys, private_ledger):
    exp = _exp(tmp_path, server)
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    assert "study pna-study: 8 cells, 8 run now, 0 complete before" in out
    rows = _rows(tmp_path / "notes.db")
    assert len(rows) == 8 * 12
    assert sorted({r[0] for r in rows}) == sorted(f"pna-study/{c}" for c in CELLS)
    for experiment, _, model, _ in rows:  # each cell's rows carry its own model
        assert experiment.split("/")[1] == model
    runs = sorted(ledger_runs(private_ledger), key=lambda r: r["started_at"])
    assert [r["experiment"] for r in runs] == [f"pna-study/{c}" for c in CELLS]  # grouped by model, in plan order
    # the prompt hash covers prompt, schema and options (the seed), not the model: 2 prompts x 2 seeds
    hashes = {r["experiment"].split("/", 2)[2]: set() for r in runs}
    for r in runs:
        hashes[r["experiment"].split("/", 2)[2]].add(r["prompt_hash"])
    assert len(hashes) == 4 and all(len(h) == 1 for h in hashes.values())
    assert len({r["prompt_hash"] for r in runs}) == 4
    assert server.stats()["chat"] == 96

    # one cell loses three answers (say, they were deleted to be asked again): only that cell runs again
    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute("DELETE FROM pna_results WHERE experiment = ? AND note_id < 3", ["pna-study/qwen2.5:7b-instruct/short/r2"])
    conn.commit()
    conn.close()
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    assert "cell 1/8 llama3.1:8b/short/r1 (seed 7): complete, skipped" in out
    assert "cell 6/8 qwen2.5:7b-instruct/short/r2 (seed 8): 3 notes to do" in out
    assert "study pna-study: 8 cells, 1 run now, 7 complete before" in out
    assert server.stats()["chat"] == 99
    assert len(_rows(tmp_path / "notes.db")) == 96

    code, out, err = cli(capsys, "ledger", "study", "pna-study", "--json", "--bootstrap", "50")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["study"] == "pna-study" and doc["field"] == "response"
    assert [c["cell"] for c in doc["cells"]] == CELLS
    resumed = next(c for c in doc["cells"] if c["cell"] == "qwen2.5:7b-instruct/short/r2")
    assert len(resumed["runs"]) == 2 and resumed["n"] == 12
    assert all(c["n"] == 12 and c["small"] for c in doc["cells"])
    assert [(s["model"], s["prompt"], s["repeats"]) for s in doc["stability"]] == [
        (m, p, 2) for m in ("llama3.1:8b", "qwen2.5:7b-instruct") for p in ("short", "terse")]
    assert len(doc["paired"]) == 6  # the four first repeats, two by two
    assert [n["unit"] for n in doc["notes"]] == [str(i) for i in range(12)]
    assert all(set(n["labels"]) == set(CELLS) for n in doc["notes"])
    gold = {str(i): GOLD[i % 3] for i in range(12)}
    assert all(n["gold"] == gold[n["unit"]] for n in doc["notes"])

    code, out, err = cli(capsys, "ledger", "study", "pna-study", "--json", "--offset", "10", "--limit", "5")
    assert [n["unit"] for n in json.loads(out)["notes"]] == ["10", "11"]


def test_an_unknown_study_is_one_line_naming_the_known_ones(tmp_path, server, capsys):
    exp = _exp(tmp_path, server)
    assert cli(capsys, "--run", str(exp))[0] == 0
    code, out, err = cli(capsys, "ledger", "study", "pna-stuyd")
    assert code == 2 and out == ""
    assert err.strip() == f"notes-tui: error: no study named 'pna-stuyd' in {tmp_path / 'ledger'} — studies there: pna-study"
