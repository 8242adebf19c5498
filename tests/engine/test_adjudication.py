"""Adjudication end to end: a study against the stand-in, reference labels set with `ledger adjudicate`, and
`ledger eval` / `ledger study --reference adjudicated` changing exactly as recorded; `ledger verify` catching an
edited decision."""

from __future__ import annotations

import json
from collections import Counter

from tests.engine.test_study import CELLS, GOLD, _exp, server  # noqa: F401  (server is a fixture)
from tests.helpers.runhelp import cli, ledger_runs


def _eval(capsys, run_id: str, *extra: str) -> dict:
    code, out, err = cli(capsys, "ledger", "eval", run_id, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def _answers(capsys, run_id: str) -> dict[str, str]:
    """The cell's label per note, read through the study's own table (what eval scores)."""
    code, out, err = cli(capsys, "ledger", "study", "pna-study", "--json", "--bootstrap", "0")
    assert code == 0, err
    return {n["unit"]: n["labels"][CELLS[0]] for n in json.loads(out)["notes"]}


def test_adjudications_change_eval_and_study_exactly_as_recorded(tmp_path, server, capsys, private_ledger):  # noqa: F811
    exp = _exp(tmp_path, server)
    assert cli(capsys, "--run", str(exp))[0] == 0
    first = next(r for r in ledger_runs(private_ledger) if r["experiment"] == f"pna-study/{CELLS[0]}")
    gold = {str(i): GOLD[i % 3] for i in range(12)}
    answers = _answers(capsys, first["run_id"])
    before = _eval(capsys, first["run_id"])
    assert before["reference"]["kind"] == "gold" and before["reference"]["adjudicated"] == 0

    wrong = sorted(u for u in gold if answers[u] != gold[u])
    right = sorted(u for u in gold if answers[u] == gold[u])
    assert wrong and right, "the stand-in must answer some notes right and some wrong for this test to mean anything"
    fixed, broken = wrong[0], right[0]
    other = next(g for g in GOLD if g != gold[broken])
    code, out, err = cli(capsys, "ledger", "adjudicate", "pna-study", fixed, answers[fixed], "--comment", "read it again")
    assert code == 0, err
    assert f"note {fixed}: reference {answers[fixed]} for response (was {gold[fixed]} (gold))" in out
    code, out, err = cli(capsys, "ledger", "adjudicate", "pna-study", broken, other[:3])  # "(2)": the start of a label
    assert code == 0, err

    after = _eval(capsys, first["run_id"], "--reference", "adjudicated")
    reference = dict(gold, **{fixed: answers[fixed], broken: other})
    n = len(gold)
    assert after["accuracy"] == sum(answers[u] == reference[u] for u in gold) / n
    assert after["wrong"] == sorted((set(before["wrong"]) - {fixed}) | {broken})
    expected = Counter((reference[u], answers[u]) for u in gold)
    labels = after["labels"]
    assert after["confusion"] == [[expected[(g, a)] for a in labels] for g in labels]
    ref = after["reference"]
    assert (ref["kind"], ref["adjudicated"], ref["changed_from_gold"], ref["added_to_gold"]) == ("adjudicated", 2, 2, 0)
    assert _eval(capsys, first["run_id"])["accuracy"] == before["accuracy"]  # gold is still gold

    # a second decision on the same note replaces the first; the trail keeps both, each with what it replaced
    code, out, err = cli(capsys, "ledger", "adjudicate", "pna-study", fixed, gold[fixed])
    assert code == 0, err
    code, out, err = cli(capsys, "ledger", "adjudications", "pna-study", "--json")
    trail = json.loads(out)
    assert [(d["unit"], d["label"], d["replaces"], d["replaces_kind"]) for d in trail] == [
        (fixed, answers[fixed], gold[fixed], "gold"), (broken, other, gold[broken], "gold"),
        (fixed, gold[fixed], answers[fixed], "adjudicated")]
    assert trail[0]["comment"] == "read it again" and all(d["who"] for d in trail)
    again = _eval(capsys, first["run_id"], "--reference", "adjudicated")
    assert again["wrong"] == sorted(set(before["wrong"]) | {broken})

    code, out, err = cli(capsys, "ledger", "study", "pna-study", "--json", "--reference", "both", "--bootstrap", "0")
    assert code == 0, err
    both = json.loads(out)
    assert set(both) == {"gold", "adjudicated"}
    notes = {n["unit"]: n for n in both["adjudicated"]["notes"]}
    assert notes[broken]["gold"] == other and notes[fixed]["gold"] == gold[fixed]
    assert {n["unit"]: n["gold"] for n in both["gold"]["notes"]}[broken] == gold[broken]
    cell = {c["cell"]: c for c in both["adjudicated"]["cells"]}[CELLS[0]]
    assert cell["accuracy"] == again["accuracy"]
    code, out, err = cli(capsys, "ledger", "study", "pna-study", "--reference", "adjudicated", "--bootstrap", "0")
    assert "reference: adjudicated: gold labels from column gold of the source" in out
    assert "with 2 adjudicated labels in place (1 differ from gold, 0 where gold had none)" in out

    # verify: the decisions are sealed; an edited one is caught, the last included
    code, out, err = cli(capsys, "ledger", "verify")
    assert code == 0, out
    assert "adjudications: 3 records, 3 sealed" in out
    path = private_ledger / "adjudications.jsonl"
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    forged = next(g for g in GOLD if g != gold[fixed])
    edited = lines[-1].replace(b'"label":' + json.dumps(gold[fixed]).encode(), b'"label":' + json.dumps(forged).encode())
    assert edited != lines[-1]
    path.write_bytes(b"".join(lines[:-1]) + edited)
    code, out, err = cli(capsys, "ledger", "verify")
    assert code == 1
    assert "adjudications (adjudications.jsonl): record seq 2 (adjudication) was changed after it was sealed" in out
    path.write_bytes(lines[0].replace(b"read it again", b"read it twice") + b"".join(lines[1:]))
    code, out, err = cli(capsys, "ledger", "verify")
    assert code == 1 and "record seq 0 (adjudication) was changed: record seq 1 no longer matches its hash" in out
    path.write_bytes(original)
    assert cli(capsys, "ledger", "verify")[0] == 0


def test_adjudicate_refuses_what_it_cannot_record_in_one_line(tmp_path, server, capsys, private_ledger):  # noqa: F811
    exp = _exp(tmp_path, server)
    assert cli(capsys, "--run", str(exp))[0] == 0
    cases = [
        (("pna-stduy", "1", "(1)"), "no study or experiment named 'pna-stduy'"),
        (("pna-study", "99", "(1)"), "no note '99' among the notes pna-study answered"),
        (("pna-study", "1", "maybe"), "'maybe' is not one label of field response (labels: (1) Likely, (2) Unlikely,"),
        (("pna-study", "1", "("), "'(' is not one label of field response"),  # the start of all three: ambiguous
        (("pna-study", "1", "(1)", "--field", "reason"), "field 'reason' is not a choice or bool field"),
    ]
    for args, message in cases:
        code, out, err = cli(capsys, "ledger", "adjudicate", *args)
        assert code == 2 and out == "", (args, out, err)
        assert len(err.strip().splitlines()) == 1 and message in err, (args, err)
    assert not (private_ledger / "adjudications.jsonl").exists()
    code, out, err = cli(capsys, "ledger", "adjudicate", "pna-study", "0", GOLD[0])  # note 0's gold already
    assert code == 0 and "is already its reference (gold) — nothing recorded" in out
    assert not (private_ledger / "adjudications.jsonl").exists()
