"""The notes tables the run tests share: a SQLite one (`make_db`, `SOURCE`, read back with `results`) and the SOP's
MariaDB one (`fill`, `sop_source`)."""

from __future__ import annotations

import sqlite3

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def make_db(path, n=30, extra_rows=()):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, patient TEXT, note_text BLOB)")
    rows = [(i, f"p{i % 5}", f"CHEST X-RAY {i}: findings {'consolidation' if i % 3 else 'clear'}.") for i in range(n)]
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)", list(rows) + list(extra_rows))
    conn.commit()
    conn.close()


def results(path, table="pna_results"):
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY note_id")]
    conn.close()
    return rows


SOP_TABLE = "CREATE TABLE PNA2_100_RadNotes (patientvisitid INT, accession VARCHAR(255), note_text BLOB)"


def sop_source(env_name: str) -> str:
    return (f'kind = "mysql"\nenv_file = "{env_name}"\ntable = "PNA2_100_RadNotes"\n'
            'id_columns = ["patientvisitid", "accession"]\ntext_column = "note_text"')


def fill(connect, n, extra=()):
    conn = connect()
    with conn.cursor() as cur:
        cur.execute(SOP_TABLE)
        rows = [(1000 + i, f"ACC{i:05d}", f"PORTABLE CHEST {i}: {'RLL consolidation' if i % 2 else 'clear'}".encode())
                for i in range(n)]
        cur.executemany("INSERT INTO PNA2_100_RadNotes VALUES (%s, %s, %s)", rows + list(extra))
    conn.close()
