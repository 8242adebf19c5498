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
