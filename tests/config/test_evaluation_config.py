"""Each mistake in an [evaluation] section is one line naming the key and the fix, exit status 2, before any note
is read or sent (`check` and `--run` refuse the file, like any other mistake in it)."""

from __future__ import annotations

import sqlite3

import pytest

from tests.helpers.auditkit import SOURCE, make_notes, spawn_cli
from tests.helpers.support import experiment_toml

GROUPED = SOURCE.replace('id_columns = ["note_id"]', 'group_by = ["gold"]')

CASES = [
    ("neither", "[evaluation]\nmap = {}\n", "evaluation.gold_column: give exactly one of gold_column or gold_query"),
    ("both", '[evaluation]\ngold_column = "gold"\ngold_query = "SELECT note_id, gold FROM notes"\n',
     "give exactly one of gold_column or gold_query"),
    ("unknown-key", '[evaluation]\ngold_colum = "gold"\n',
     "evaluation.gold_colum: unknown key in [evaluation] — check the spelling; allowed keys: gold_column, gold_query"),
    ("not-an-identifier", '[evaluation]\ngold_column = "gold; DROP TABLE notes"\n', "is not a plain column name"),
    ("not-one-select", '[evaluation]\ngold_query = "SELECT 1; DELETE FROM notes"\n',
     "evaluation.gold_query: the query must be one SELECT statement"),
    ("map-to-no-choice", '[evaluation]\ngold_column = "gold"\nmap = { "yes" = "Likely" }\n',
     "evaluation.map.yes: 'Likely' is not a choice of response — map 'yes' to one of: (1) Likely"),
    ("field-is-text", '[evaluation]\ngold_column = "gold"\nfield = "explanation"\n',
     "evaluation.field: 'explanation' is not a choice or bool field"),
    ("map-not-a-table", '[evaluation]\ngold_column = "gold"\nmap = "yes=(1) Likely"\n', "evaluation.map"),
]


@pytest.mark.parametrize(("case_id", "section", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_evaluation_mistake_is_one_line(tmp_path, case_id, section, fragment):
    make_notes(tmp_path / "notes.db", n=3)
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=["http://127.0.0.1:9"], extra=section))
    res = spawn_cli("check", str(exp))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and fragment in res.stderr and "Traceback" not in res.stderr


def test_gold_column_with_group_by_asks_for_a_query(tmp_path):
    from app.errors import ConfigError
    from app.experiment import load_experiment

    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=GROUPED, hosts=["http://127.0.0.1:9"],
                                   extra='[evaluation]\ngold_column = "gold"\n'))
    with pytest.raises(ConfigError, match="use gold_query returning gold and one label per group"):
        load_experiment(exp)


def test_a_bool_field_maps_to_true_and_false(tmp_path):
    from app.evaluation import evaluation_for, read_gold
    from app.experiment import load_experiment

    make_notes(tmp_path / "notes.db", n=9)
    text = experiment_toml(source=SOURCE, hosts=["http://127.0.0.1:9"],
                           extra='[evaluation]\ngold_column = "gold"\nmap = { "yes" = true, "no" = false }\n')
    text = text.replace('type = "choice"\nchoices = ["(1) Likely", "(2) Unlikely", "(3) Unable to say"]', 'type = "bool"')
    text = text.replace('response = "(4) LLM output invalid"\n', "response = false\n")
    exp = tmp_path / "exp.toml"
    exp.write_text(text)
    loaded = load_experiment(exp)
    assert loaded.spec.evaluation.field == "response"
    ev = evaluation_for(loaded, map_items=["yes=true", "no=false", "unsure=0"])
    assert ev.map == {"yes": True, "no": False, "unsure": False}
    conn = sqlite3.connect(tmp_path / "notes.db")
    truth = {str(i): {"yes": True, "no": False, "unsure": False}[g] for i, g in conn.execute("SELECT note_id, gold FROM notes")
             if g is not None}
    conn.close()
    assert read_gold(loaded, ev) == truth
