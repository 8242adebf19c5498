"""`ledger study NAME --format md|html|csv [-o FILE]` on a study run end to end against the stand-in Ollama (two
models, two prompt variants that ask differently, two repeats): every format holds the figures of `--json`, says
which reference it used and how many labels were adjudicated, and never a word of a note; the HTML report is one
self-contained file with the models, the exact prompts and their hashes, and the TRIPOD-LLM / MI-CLEAR-LLM map."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3
from html.parser import HTMLParser

import pytest

from tests.helpers.runhelp import cli
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import StandinOllama

# one worker builds the module's study once; spread over workers, each would build it again
pytestmark = pytest.mark.xdist_group("test_study_report_formats")

GOLD = ["(1) Likely", "(2) Unlikely", "(3) Unable to say"]
MODELS = ("llama3.1:8b", "qwen2.5:7b-instruct")
SYSTEM_TERSE = "Answer <only> in JSON & nothing else."  # markup in a prompt: the HTML must escape it
STUDY = f"""
[study]
models = {json.dumps(list(MODELS))}
repeats = 2
[study.prompts.short]
[study.prompts.terse]
system = "{SYSTEM_TERSE}"
user = "Pneumonia? {{note}}"

[evaluation]
gold_column = "gold"
"""
SOURCE = ('kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
          '\ncolumns = []')
NOTE_WORDS = "CHEST X-RAY"  # in every note's text; never in a report
CELLS = [f"{m}/{p}/r{r}" for m in MODELS for p in ("short", "terse") for r in (1, 2)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study's folder and ledger, built once: 8 cells of 12 notes."""
    tmp = tmp_path_factory.mktemp("study-formats")
    conn = sqlite3.connect(tmp / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT, gold TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)",
                     [(i, f"{NOTE_WORDS} {i}: {'consolidation' if i % 3 else 'clear'}.", GOLD[i % 3]) for i in range(12)])
    conn.commit()
    conn.close()
    ledger = tmp / "ledger"
    with pytest.MonkeyPatch.context() as mp, StandinOllama(latency=0.002, slots=4, models=MODELS) as server:
        mp.setenv("NOTES_TUI_LEDGER", str(ledger))
        mp.setenv("NOTES_TUI_CONFIG", str(tmp / "user-config.toml"))
        mp.delenv("OLLAMA_HOST", raising=False)
        exp = tmp / "study.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], name="fmt-study", options="temperature = 0.7",
                                       extra=STUDY).replace("temperature = 0.0\n", ""))
        from app.cli import main

        assert main(["--run", str(exp), "--ledger", str(ledger)]) == 0
    return tmp, ledger


def study_cli(capsys, study, *args: str) -> tuple[int, str, str]:
    return cli(capsys, "ledger", "study", "fmt-study", "--ledger", str(study[1]), "--bootstrap", "50", *args)


@pytest.fixture(scope="module")
def doc(study):
    """The --json the formats are held to (a module fixture has no capsys: stdout redirected here)."""
    from app.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["ledger", "study", "fmt-study", "--ledger", str(study[1]), "--bootstrap", "50", "--json"]) == 0
    return json.loads(buf.getvalue())


def ci(v, lo, hi) -> str:
    return "–" if v is None else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def p_text(p) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def md_row(md: str, *first: str) -> str:
    """The one Markdown table row that starts with these cells."""
    start = "| " + " | ".join(first) + " |"
    rows = [line for line in md.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, rows)
    return rows[0]


def md_tables(md: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            if current is None:
                current = []
                tables.append(current)
            current.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif not line.startswith("|---"):
            current = None
    return tables


class Page(HTMLParser):
    """The tags (checking every one that opens is closed, in order), the tables, and any address of a resource."""

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self.cell is not None:
            self.cell.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    assert page.stack == [], page.stack
    return page


def test_markdown_holds_the_figures_of_the_json(study, doc, capsys):
    code, md, err = study_cli(capsys, study, "--format", "md")
    assert code == 0, err
    assert md.startswith("# notes-tui study report: fmt-study\n")
    assert [c["cell"] for c in doc["cells"]] == CELLS
    for c in doc["cells"]:
        row = md_row(md, c["cell"], str(c["n"]))
        assert ci(c["accuracy"], c["accuracy_low"], c["accuracy_high"]) in row
        assert ci(c["macro_f1"], c["macro_f1_low"], c["macro_f1_high"]) in row
        assert ci(c["kappa"], c["kappa_low"], c["kappa_high"]) in row
        assert c["run_id"] in row
    assert len({c["accuracy"] for c in doc["cells"]}) > 1  # the two variants ask differently: the figures differ
    assert f"Best by accuracy: {doc['best_cell']}." in md
    for st in doc["stability"]:
        row = md_row(md, f"{st['model']}/{st['prompt']}", str(st["repeats"]))
        assert ci(st["fleiss_kappa"], st["fleiss_low"], st["fleiss_high"]) in row
        assert ci(st["krippendorff_alpha"], st["alpha_low"], st["alpha_high"]) in row
    assert len(doc["paired"]) == 6
    for p in doc["paired"]:
        row = md_row(md, p["a"], p["b"], str(p["n"]), str(p["only_a_correct"]), str(p["only_b_correct"]))
        assert f"| {p_text(p['mcnemar_p'])} |" in row
        assert ci(p["kappa"], p["kappa_low"], p["kappa_high"]) in row
    # the reference, the caution under 30 notes, the best cell's confusion matrix
    assert "Reference: gold labels from column gold of the source, compared as they are (12 labels, none adjudicated)." in md
    assert "Caution: under 30 notes with a reference label in every cell" in md
    bc = doc["best_confusion"]
    matrix = next(t for t in md_tables(md) if t[0] == [""] + bc["labels"])
    assert [[int(v) for v in row[1:]] for row in matrix[1:]] == bc["matrix"]
    # the disagreements: every one listed, by note id, with the reference and each cell's label
    different = [n for n in doc["notes"] if n["different"]]
    assert doc["notes_different"] == len(different) > 0
    notes = next(t for t in md_tables(md) if t[0][:2] == ["note", "reference"])
    assert notes[0][2:] == CELLS
    assert [r[0] for r in notes[1:]] == [n["unit"] for n in different]
    assert [r[1:] for r in notes[1:]] == [[n["gold"]] + [n["labels"][c] for c in CELLS] for n in different]
    # the prompts and their hashes; never a note
    for c in doc["cells"]:
        assert c["prompt_hash"] in md and c["model_digest"] in md
    assert SYSTEM_TERSE in md and "Pneumonia? {note}" in md
    assert NOTE_WORDS not in md and "consolidation" not in md


def test_html_is_one_self_contained_file_with_the_figures_prompts_and_guideline_map(study, doc, capsys, tmp_path):
    out = tmp_path / "study.html"
    code, stdout, err = study_cli(capsys, study, "--format", "html", "-o", str(out))
    assert code == 0, err
    assert stdout == "" and err.strip() == f"wrote {out}"
    html = out.read_text(encoding="utf-8")
    page = parse(html)
    # self-contained: nothing fetched, no script, the style and the chart inline
    assert "http://" not in html and "https://" not in html
    assert not [a for a in page.attrs if a[0] in ("src", "href")], page.attrs
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert page.tags.count("style") == 1 and page.tags.count("svg") == 1
    # the cell table says what the Markdown says, figure by figure
    _, md, _ = study_cli(capsys, study, "--format", "md")
    assert page.tables[0] == md_tables(md)[0]
    assert [r[0] for r in page.tables[0][1:]] == CELLS
    text = " ".join(page.text)
    assert "Reference: gold labels from column gold of the source" in text and "none adjudicated" in text
    # the models, seeds and temperature, the exact prompts (escaped) and every hash
    for c in doc["cells"]:
        assert c["prompt_hash"] in text and c["model_digest"] in text
    assert SYSTEM_TERSE in text and "&lt;only&gt; in JSON &amp; nothing else" in html and "<only>" not in html
    assert "Pneumonia? {note}" in text and "You are a medical analysis assistant." in text
    assert "repeat 1: seed 7; repeat 2: seed 8; temperature 0.7" in text
    assert f"seed {doc['bootstrap']['seed']}" in text and "one request per note and attempt" in text
    # the map: TRIPOD-LLM items and MI-CLEAR-LLM items 1–4
    guide = next(t for t in page.tables if t[0][:2] == ["guideline", "item"])
    items = [(r[0], r[1]) for r in guide[1:]]
    assert [i for g, i in items if g == "MI-CLEAR-LLM"] == ["1", "2", "3", "4"]
    assert {"6a", "6c", "7e", "17"} <= {i for g, i in items if g == "TRIPOD-LLM"}
    assert NOTE_WORDS not in html and "consolidation" not in html


def test_csv_is_one_row_per_cell_with_the_json_figures(study, doc, capsys):
    from ledger.report.study_csv import COLUMNS

    code, out, err = study_cli(capsys, study, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) == len(doc["cells"]) == 8
    for row, c in zip(rows, doc["cells"]):
        assert row["cell"] == c["cell"] and row["prompt_hash"] == c["prompt_hash"] and row["run_id"] == c["run_id"]
        assert float(row["accuracy"]) == c["accuracy"] and float(row["kappa_low"]) == c["kappa_low"]
        assert int(row["n"]) == c["n"] and row["small"] == "true"
        assert (row["reference"], row["reference_labels"], row["reference_adjudicated"]) == ("gold", "12", "0")
        assert row["best"] == ("true" if c["cell"] == doc["best_cell"] else "false")
    assert NOTE_WORDS not in out


def test_both_references_make_one_report_with_the_figures_of_each(study, capsys):
    code, out, err = study_cli(capsys, study, "--format", "csv", "--reference", "both")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["reference"] for r in rows] == ["gold"] * 8 + ["adjudicated"] * 8
    code, md, err = study_cli(capsys, study, "--format", "md", "--reference", "both")
    assert code == 0, err
    assert md.count("# notes-tui study report") == 1
    assert "## Cells against the reference (gold)" in md and "## Cells against the reference (adjudicated)" in md
    assert md.count("## Prompts") == 1
    assert "Reference: adjudicated: " in md


def test_limit_caps_the_notes_listed(study, doc, capsys):
    code, md, err = study_cli(capsys, study, "--format", "md", "--limit", "2")
    assert code == 0, err
    notes = next(t for t in md_tables(md) if t[0][:2] == ["note", "reference"])
    assert len(notes) == 1 + 2
    assert f"{doc['notes_different']} of 12 notes; the first 2 listed" in md


@pytest.mark.parametrize("args, fragment", [
    (("--format", "html", "--json"), "--json and --format html cannot be combined"),
    (("--format", "pdf"), "argument --format: invalid choice: 'pdf'"),
])
def test_a_format_with_json_or_an_unknown_format_is_one_line_and_exit_2(study, capsys, args, fragment):
    try:
        code, out, err = study_cli(capsys, study, *args)
    except SystemExit as exc:  # argparse's own refusal
        code, captured = exc.code, capsys.readouterr()
        out, err = captured.out, captured.err
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
