"""--shard I/N against the real MariaDB: N shards answer every unit exactly once, each its own ledger run tagged with
its shard; SQLite refuses in one line; a job array task finds its shard in Slurm's environment."""

from __future__ import annotations

import pytest

from app.cluster.shards import array_shard, parse_shard
from app.errors import UserError
from tests.helpers.runhelp import cli, journal_records
from tests.helpers.support import experiment_toml, write_env
from tests.standin.standin_ollama import StandinOllama

SQLITE_SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def fill(connect, n: int) -> None:
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (patientvisitid INT, accession VARCHAR(255), note_text BLOB)")
        cur.executemany("INSERT INTO notes VALUES (%s, %s, %s)",
                        [(1000 + i, f"ACC{i:05d}", f"CHEST {i}: clear".encode()) for i in range(n)])
    conn.close()


def mysql_source(env_name: str) -> str:
    return (f'kind = "mysql"\nenv_file = "{env_name}"\ntable = "notes"\n'
            'id_columns = ["patientvisitid", "accession"]\ntext_column = "note_text"')


def results(connect) -> list[tuple]:
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT patientvisitid, accession, run_id FROM pna_results")
        rows = list(cur.fetchall())
    conn.close()
    return rows


@pytest.mark.mysql
def test_three_shards_answer_every_unit_once(tmp_path, mysql_db, capsys, private_ledger):
    db, connect = mysql_db
    fill(connect, 90)
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.0) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=mysql_source(env.name), hosts=[server.url]))
        for i in range(3):
            code, out, err = cli(capsys, "--run", str(exp), "--shard", f"{i}/3")
            assert code == 0, err
        code, out, err = cli(capsys, "--run", str(exp), "--shard", "1/3")  # a shard run again: nothing to do
        assert code == 0 and "0 notes to do" in out, out
    rows = results(connect)
    assert len(rows) == 90 and len({r[:2] for r in rows}) == 90
    headers = [r["header"] for r in journal_records(private_ledger) if r["type"] == "header"]
    sizes = {h["shard"]["index"]: h["total"] for h in headers if h["total"]}
    assert sorted(sizes) == [0, 1, 2] and sum(sizes.values()) == 90 and all(sizes.values())
    assert all(h["shard"]["count"] == 3 for h in headers)
    by_run = {}
    for _, _, run in rows:
        by_run[run] = by_run.get(run, 0) + 1
    assert sorted(by_run.values()) == sorted(sizes.values())  # each shard's rows come from its own run


def test_shard_with_sqlite_is_refused_in_one_line(tmp_path, capsys):
    from tests.helpers.support import make_notes_db

    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE, hosts=["http://127.0.0.1:9"]))
    code, out, err = cli(capsys, "--run", str(exp), "--shard", "0/2")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "SQLite" in lines[0] and "MySQL" in lines[0], err


@pytest.mark.parametrize("args,fragment", [(["--shard", "3/3", "--run", "x.toml"], "must be below N"),
                                           (["--shard", "a/b", "--run", "x.toml"], "is not I/N"),
                                           (["--shard", "0/2"], "--shard goes with --run")])
def test_shard_mistakes_are_one_line(args, fragment, capsys):
    code, out, err = cli_safe(capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err


def cli_safe(capsys, *args):
    try:
        return cli(capsys, *args)
    except SystemExit as exc:  # argparse's own errors exit from inside main
        out = capsys.readouterr()
        return exc.code, out.out, out.err


def test_a_job_array_task_finds_its_shard():
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "5",
           "SLURM_ARRAY_TASK_STEP": "1"}
    assert array_shard(env) == (2, 3)
    assert array_shard({}) is None
    assert array_shard({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"}) is None
    with pytest.raises(UserError, match="--array=0-N-1"):
        array_shard({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0"})
    assert parse_shard("0/4") == (0, 4)


STUDY = """
[study]
models = ["llama3", "mistral"]
repeats = 2

[evaluation]
gold_column = "gold"
"""


@pytest.mark.mysql
def test_a_study_under_a_job_array_gives_every_task_its_shard_of_every_cell(tmp_path, mysql_db, capsys, private_ledger,
                                                                            monkeypatch):
    db, connect = mysql_db
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (patientvisitid INT, accession VARCHAR(255), note_text BLOB, gold VARCHAR(32))")
        cur.executemany("INSERT INTO notes VALUES (%s, %s, %s, %s)",
                        [(1000 + i, f"ACC{i:05d}", f"CHEST {i}: clear".encode(), "(2) Unlikely") for i in range(40)])
    conn.close()
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.0, models=("llama3", "mistral")) as server:
        exp = tmp_path / "study.toml"
        exp.write_text(experiment_toml(source=mysql_source(env.name), hosts=[server.url], name="arr-study",
                                       options="temperature = 0.7", extra=STUDY).replace("temperature = 0.0\n", ""))
        for task in ("0", "1"):  # what `notes-tui submit FILE --array 2` runs, one task after the other
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
            monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
            code, out, err = cli(capsys, "--run", str(exp))
            assert code == 0, err
            assert "study arr-study: 4 cells, 4 run now" in out
        monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
        code, out, err = cli(capsys, "ledger", "study", "arr-study", "--json", "--bootstrap", "0")
    assert code == 0, err
    import json

    doc = json.loads(out)
    assert [c["cell"] for c in doc["cells"]] == [f"{m}/base/r{r}" for m in ("llama3", "mistral") for r in (1, 2)]
    for cell in doc["cells"]:  # two runs a cell, one per task, together every note once
        assert len(cell["runs"]) == 2 and cell["n"] == 40, cell
    headers = [r["header"] for r in journal_records(private_ledger) if r["type"] == "header"]
    by_cell: dict[str, list] = {}
    for h in headers:
        by_cell.setdefault(h["study"]["cell"], []).append((h["shard"]["index"], h["total"]))
    assert all(sorted(i for i, _ in v) == [0, 1] and sum(t for _, t in v) == 40 for v in by_cell.values()), by_cell
