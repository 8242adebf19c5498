"""The audit commands on a run from the real MariaDB: gold labels read from MySQL (two id columns, a gold column
with its own spelling), and no password, note text or free-text answer in any report, show, compare or eval."""

from __future__ import annotations

import json
import uuid

import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score

from tests.helpers.auditkit import run_cli
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import StandinOllama

pytestmark = pytest.mark.mysql

GOLD = {"P": "(1) Likely", "N": "(2) Unlikely", "U": "(3) Unable to say"}
EVALUATION = ('[evaluation]\ngold_column = "radiologist"\n'
              'map = { "P" = "(1) Likely", "N" = "(2) Unlikely", "U" = "(3) Unable to say" }\n')


def test_reports_from_a_mysql_run_hold_no_secret(tmp_path, mysql_db, private_ledger):
    db, connect = mysql_db
    user, password = f"nt_audit_{uuid.uuid4().hex[:8]}", "Walrus-Ember-5519"
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (patientvisitid INT, accession VARCHAR(64), radiologist CHAR(1), note_text BLOB)")
        cur.executemany("INSERT INTO notes VALUES (%s, %s, %s, %s)",
                        [(100 + i, f"ACC{i:04d}", "PNU"[i % 3] if i % 7 else None,
                          f"PORTABLE CHEST {i}: CONFIDENTIALNOTE {i}".encode()) for i in range(30)])
        for host in ("%", "localhost"):
            cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'{host.replace('%', '%%')}' IDENTIFIED BY %s", (password,))
            cur.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'{host}'")
    try:
        env = tmp_path / ".env"
        env.write_text(f"DB_USER={user}\nDB_PASS={password}\nDB_HOST=127.0.0.1\nDB_NAME={db}\n")
        env.chmod(0o600)
        source = ('kind = "mysql"\nenv_file = ".env"\ntable = "notes"\nid_columns = ["patientvisitid", "accession"]\n'
                  'text_column = "note_text"')
        exp = tmp_path / "exp.toml"
        with StandinOllama(latency=0.0) as server:
            exp.write_text(experiment_toml(source=source, hosts=[server.url], name="mysql-audit", extra=EVALUATION))
            assert run_cli("--run", str(exp))[0] == 0
        [run] = json.loads(run_cli("ledger", "list", "--json")[1])
        rid = run["run_id"]
        code, out, err = run_cli("ledger", "eval", rid, "--json")
        assert code == 0, err
        e = json.loads(out)
        with conn.cursor() as cur:
            cur.execute("SELECT r.response, n.radiologist, r.explanation FROM pna_results r JOIN notes n "
                        "ON n.patientvisitid = r.patientvisitid AND n.accession = r.accession WHERE r.experiment = %s",
                        ("mysql-audit",))
            rows = cur.fetchall()
        scored = [(GOLD[g], r) for r, g, _ in rows if g is not None]
        assert e["with_gold"] == len(scored) and e["without_gold"] == len(rows) - len(scored) > 0
        assert e["accuracy"] == pytest.approx(accuracy_score(*zip(*scored)))
        assert e["kappa"] == pytest.approx(cohen_kappa_score(*zip(*scored)))
        report = json.loads(run_cli("ledger", "report", rid, "--format", "json")[1])
        assert report["source"]["database"] == f"127.0.0.1:3306/{db}" and report["source"]["kind"] == "mysql"
        outputs = [run_cli("ledger", "report", rid, "--format", fmt)[1] for fmt in ("md", "html", "csv", "json")]
        outputs += [run_cli("ledger", "show", rid, *flag)[1] for flag in ((), ("--json",))]
        outputs += [out, run_cli("ledger", "verify")[1]]
        blob = "\n".join(outputs)
        assert password not in blob and user not in blob
        assert "CONFIDENTIALNOTE" not in blob
        explanations = {x for _, _, x in rows if x}
        assert explanations and not [x for x in explanations if x in blob]
    finally:
        conn.close()
        admin = connect()
        with admin.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        admin.close()
