"""The adjudications file on its own: appends from many processes keep one unbroken chain, a writer cut mid-line
loses only its own line, the index imports it and the seal chain seals each growth, verify names what was changed."""

from __future__ import annotations

import json
import multiprocessing

from ledger import Ledger
from ledger.adjudication import ADJ_FILE, Decision, append, match_label, reference_labels
from ledger.verify import verify_ledger


def _decide(ledger_dir, unit: str, label: str = "(1) Likely") -> dict:
    return append(ledger_dir, Decision("s", "response", unit, label, None, None, None), who="tester")


def _writer(args) -> None:
    ledger_dir, start = args
    for i in range(start, start + 25):
        _decide(ledger_dir, str(i))


def test_four_processes_appending_at_once_keep_one_chain(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_writer, [(tmp_path, k * 100) for k in range(4)])
    lines = (tmp_path / ADJ_FILE).read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(100))
    result = verify_ledger(tmp_path)
    assert result.ok, result.problems
    assert result.adjudications == 100
    assert sorted(int(json.loads(line)["unit"]) for line in lines) == sorted(k * 100 + i for k in range(4) for i in range(25))


def test_the_index_imports_decisions_and_each_growth_is_sealed(tmp_path):
    led = Ledger(tmp_path)
    _decide(tmp_path, "1")
    led.sync()
    _decide(tmp_path, "2", "(2) Unlikely")
    _decide(tmp_path, "1", "(3) Unable to say")
    led.sync()
    seals = led.read(lambda db: db.conn.execute("select kind, id, records from chain order by seq").fetchall(), [])
    assert seals == [("adjudication", "adjudications:1", 1), ("adjudication", "adjudications:3", 3)]
    labels = led.read(lambda db: reference_labels(db, "s", "response"), {})
    assert labels == {"1": "(3) Unable to say", "2": "(2) Unlikely"}  # the latest decision for a note is its reference
    assert led.read(lambda db: reference_labels(db, "s", "other"), {}) == {}
    result = verify_ledger(tmp_path)
    assert result.ok and result.sealed_adjudications == 3


def test_a_line_cut_by_a_dying_writer_goes_and_the_chain_goes_on(tmp_path):
    _decide(tmp_path, "1")
    path = tmp_path / ADJ_FILE
    with open(path, "ab") as f:
        f.write(b'{"type":"adjudication","seq":1,"pr')  # what a writer killed mid-write leaves
    _decide(tmp_path, "2")
    assert [json.loads(line)["unit"] for line in path.read_bytes().splitlines()] == ["1", "2"]
    assert verify_ledger(tmp_path).ok


def test_verify_names_a_deleted_last_decision_and_a_file_gone(tmp_path):
    led = Ledger(tmp_path)
    for unit in "123":
        _decide(tmp_path, unit)
    led.sync()
    path = tmp_path / ADJ_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # the walk alone cannot see this: the seal can
    problems = verify_ledger(tmp_path).problems
    assert [p.message for p in problems] == ["record seq 2 was deleted (sealed with 3 records)"]
    path.unlink()
    problems = verify_ledger(tmp_path).problems
    assert [p.message for p in problems] == ["the file is gone (sealed with 3 records): it was deleted or renamed"]


def test_a_typed_label_matches_one_answer_value():
    labels = ("(1) Likely", "(2) Unlikely", "(3) Unable to say")
    assert match_label(labels, "(2) Unlikely") == "(2) Unlikely"
    assert match_label(labels, "(3) unable to SAY") == "(3) Unable to say"
    assert match_label(labels, "(1)") == "(1) Likely"
    for bad in ("(", "maybe", ""):
        try:
            match_label(labels, bad)
        except LookupError:
            continue
        raise AssertionError(f"{bad!r} matched")
    assert match_label((True, False), "yes") is True and match_label((True, False), "False") is False
