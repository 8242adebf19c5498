"""`ledger list/show/report/compare/rerun` and the SQL face of the index, on a ledger built by real engine runs
against the stand-in server (tests/auditkit.py)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from sklearn.metrics import cohen_kappa_score

from tests.helpers.auditkit import NOTE_MARK, build, run_cli, spawn_cli
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import StandinOllama

# one worker builds the module's ledger once; spread over workers, each would build it again
pytestmark = pytest.mark.xdist_group("test_ledger_commands")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("audit"))


def test_list_filters_by_model_and_start(built):
    code, out, _ = built.led("list", "--json", "--model", "qwen2.5")
    assert code == 0
    assert [r["run_id"] for r in json.loads(out)] == built.runs["pna-v11-qwen"]
    code, out, _ = built.led("list", "--json", "--model", "llama3:latest")
    assert sorted(r["experiment"] for r in json.loads(out)) == ["pna-v1", "pna-v1", "pna-v11"]
    assert json.loads(built.led("list", "--json", "--model", "llama3:8b")[1]) == []
    assert len(json.loads(built.led("list", "--json", "--since", "1d")[1])) == 4
    assert json.loads(built.led("list", "--json", "--since", "2999-01-01")[1]) == []
    first = json.loads(built.led("list", "--json")[1])[-1]
    since = json.loads(built.led("list", "--json", "--since", first["started_at"])[1])
    assert len(since) == 4  # --since includes a run that started at that very moment


def test_list_matches_part_of_a_name_and_says_when_nothing_matches(built):
    code, out, _ = built.led("list", "--json", "--experiment", "V11")  # any part, any case
    assert code == 0 and sorted(r["experiment"] for r in json.loads(out)) == ["pna-v11", "pna-v11-qwen"]
    code, out, _ = built.led("list", "--json", "--model", "wen2")
    assert [r["run_id"] for r in json.loads(out)] == built.runs["pna-v11-qwen"]
    code, out, _ = built.led("list", "--json", "--experiment", "pna-v1", "--exact")  # whole names, for scripts
    assert [r["experiment"] for r in json.loads(out)] == ["pna-v1", "pna-v1"]
    assert json.loads(built.led("list", "--json", "--experiment", "pna-v", "--exact")[1]) == []

    code, out, err = built.led("list", "--experiment", "pna-v2")  # nothing: says so, with the names there are
    assert code == 0 and err == ""
    assert out == ("no run's experiment contains 'pna-v2' — the experiments here, closest first: pna-v1, pna-v11, "
                   "pna-v11-qwen\n")
    code, out, err = built.led("list", "--json", "--model", "mistral")  # JSON stays a list; the reason on stderr
    assert code == 0 and json.loads(out) == []
    assert err.startswith("no run's model contains 'mistral' — the models here, closest first: ")
    assert "llama3:latest" in err and "qwen2.5:7b" in err
    out = built.led("list", "--experiment", "qwen", "--model", "llama3")[1]  # each matches, not together
    assert out == "no run matches experiment 'qwen' and model 'llama3' together (each matches runs on its own)\n"
    out = built.led("list", "--status", "done")[1]
    assert out == "no run is 'done' — the statuses are completed, running, interrupted, failed, crashed\n"
    out = built.led("list", "--experiment", "pna-v1", "--exact", "--status", "failed")[1]
    assert out == "no run is failed\n"


def test_list_since_mistake_is_one_line(built):
    res = spawn_cli("ledger", "list", "--since", "last tuesday", "--ledger", str(built.ledger))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "--since 'last tuesday' is not a date" in res.stderr


def test_show_takes_a_unique_prefix_in_any_case(built):
    run_id = built.runs["pna-v11"][0]
    code, out, _ = built.led("show", run_id[:10].lower(), "--json")
    assert code == 0
    run = json.loads(out)
    results = built.results("pna-v11")
    assert run["run_id"] == run_id and run["status"] == "completed"
    assert run["counts"]["done"] == len(results) == 40
    assert run["outcomes"]["valid"] == sum(r["valid"] for r in results.values())
    by_label = {}
    for r in results.values():
        if r["valid"]:
            by_label[r["response"]] = by_label.get(r["response"], 0) + 1
    assert run["labels"]["response"] == by_label
    assert run["sealed"]["entry"] >= 1 and run["header"]["toml_path"].endswith("pna-v11.toml")
    code, text, _ = built.led("show", run_id[:10])
    assert code == 0 and text.startswith(f"run {run_id}  completed") and "sealed" in text


@pytest.mark.parametrize(("prefix", "expected"), [("ZZZZ", "no run id starts with 'ZZZZ'"),
                                                  ("0", "matches several runs")])
def test_show_unknown_or_ambiguous_run_is_one_line(built, prefix, expected):
    res = spawn_cli("ledger", "show", prefix, "--ledger", str(built.ledger))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and expected in res.stderr and "Traceback" not in res.stderr


def _report(built, runs, fmt):
    code, out, err = built.led("report", *runs, "--format", fmt)
    assert code == 0, err
    return out


def test_combined_report_holds_every_item(built):
    runs = built.runs["pna-v1"]
    data = json.loads(_report(built, runs, "json"))
    results = built.results("pna-v1")
    header = json.loads(built.led("show", runs[0], "--json")[1])["header"]
    # several runs of one experiment make one report
    assert [r["run_id"] for r in data["runs"]] == runs and data["flow"]["units"] == len(results) == 40
    assert data["flow"]["valid"] == sum(r["valid"] for r in results.values())
    assert data["flow"]["empty"] == sum(1 for r in results.values() if r["attempts"] == 0) == 2
    assert data["flow"]["to_do_first_run"] == 15
    labels = {x["label"]: x["n"] for x in data["distributions"][0]["labels"]}
    for label, n in labels.items():
        assert n == sum(1 for r in results.values() if r["valid"] and r["response"] == label)
    run_counts = [r["counts"] for r in data["runs"]]
    assert data["flow"]["runs_sum"]["tokens_in"] == sum(c["tokens_in"] for c in run_counts) > 0
    lat = data["latency_ms"]
    assert lat["n"] == 38 and lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert sum(b["n"] for b in lat["histogram"]) == 38
    assert [t["item"] for t in data["tripod"]] == ["6a", "6c", "6d", "19e", "7c", "7e", "17", "16a", "16d", "12"]
    head = json.loads(built.led("verify", "--json")[1])["head"]
    assert data["ledger_head"]["hash"] == head

    md = _report(built, runs, "md")
    html = _report(built, runs, "html")
    csv_text = _report(built, runs, "csv")
    items = [
        "pna-v1", "Pneumonia, prompt suggest",                           # experiment and description
        header["toml_sha256"], 'name = "pna-v1"',                         # the TOML and its sha256
        "You are a medical analysis assistant.", "Does this note suggest pneumonia",  # system prompt, template
        "(3) Unable to say", header["prompt_hash"],                       # schema, prompt hash
        "llama3:latest", header["model_digest"], "Q4_0", "8.0B", "0.11.10", "ollama",  # model
        "seed", "temperature", "num_predict",                             # options
        "sqlite", "notes.db", "note_id", "pna_results",                   # data source
        header["user"], header["hostname"], data["runs"][0]["started_at"], data["runs"][1]["ended_at"],
        "TRIPOD-LLM", "19e", "16a", head,
    ]
    csv_values = "\n".join(" ".join(row) for row in csv.reader(io.StringIO(csv_text)))
    for fmt, text in (("md", md), ("html", html), ("csv", csv_values)):
        plain = text.replace("&quot;", '"').replace("&#x27;", "'")
        # md and html show times as 2024-05-01 10:00:00.000Z, the CSV as stored
        missing = [item for item in items if str(item) not in plain and str(item).replace("T", " ", 1) not in plain]
        assert not missing, (fmt, missing)
    for word in ("p50", "p99", "invalid", "retried", "truncated", "empty", "tokens"):
        assert word in md
    assert "GPU-hours: not recorded" in md


def test_html_report_is_self_contained(built):
    html = _report(built, built.runs["pna-v1"], "html")
    lowered = html.lower()
    for forbidden in ("<script", "src=", "href=", "url(", "@import", "<link", "<iframe", "<object"):
        assert forbidden not in lowered, forbidden
    assert lowered.count("<svg") == 3  # labels, latency, throughput

    class Tags(HTMLParser):
        VOID = {"meta", "br", "line", "rect", "polyline"}

        def __init__(self):
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag not in self.VOID:
                self.stack.append(tag)

        def handle_startendtag(self, tag, attrs):
            pass

        def handle_endtag(self, tag):
            if tag in self.VOID:
                return
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
            self.stack.pop()

    parser = Tags()
    parser.feed(html)
    assert parser.stack == []


def test_csv_report_is_one_value_per_row(built):
    rows = list(csv.reader(io.StringIO(_report(built, built.runs["pna-v11"], "csv"))))
    assert rows[0] == ["section", "run", "name", "value"] and all(len(r) == 4 for r in rows)
    values = {(r[0], r[2]): r[3] for r in rows}
    assert values[("report", "experiment")] == "pna-v11" and values[("model", "quantization")] == "Q4_0"


def test_report_writes_a_file_and_refuses_mixed_runs(built, tmp_path):
    out_file = tmp_path / "r.html"
    code, out, err = built.led("report", built.runs["pna-v11"][0], "--format", "html", "-o", str(out_file))
    assert code == 0 and out == "" and out_file.read_text().startswith("<!DOCTYPE html>")
    res = spawn_cli("ledger", "report", built.runs["pna-v1"][0], built.runs["pna-v11"][0], "--ledger", str(built.ledger))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "differ in experiment" in res.stderr
    res = spawn_cli("ledger", "report", built.runs["pna-v11"][0], "--format", "pdf", "--ledger", str(built.ledger))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "invalid choice: 'pdf'" in res.stderr


def test_no_note_text_or_free_text_answer_in_any_output(built):
    explanations = {r["explanation"] for exp in built.runs for r in built.results(exp).values()
                    if r["valid"] and r["explanation"]}
    assert len(explanations) > 20
    runs = [r for rs in built.runs.values() for r in rs]
    outputs = [built.led("list", "--json")[1]]
    outputs += [_report(built, built.runs[e], fmt) for e in built.runs for fmt in ("md", "html", "csv", "json")]
    outputs += [built.led("show", r, "--json")[1] for r in runs] + [built.led("show", r)[1] for r in runs]
    outputs += [built.led("compare", *runs)[1], built.led("compare", *runs, "--json")[1]]
    blob = "\n".join(outputs)
    assert NOTE_MARK not in blob
    leaked = [e for e in explanations if e in blob]
    assert not leaked, leaked[:3]


def _answers(built, experiment):
    return {uid: r["response"] for uid, r in built.results(experiment).items() if r["valid"]}


def test_compare_two_runs_against_the_results_tables(built):
    a, b = built.runs["pna-v1"][1], built.runs["pna-v11"][0]
    code, out, _ = built.led("compare", a[:12], b[:12], "--json")
    assert code == 0
    result = json.loads(out)
    [pair] = result["pairs"]
    f = pair["fields"]["response"]
    ledger_a = {u for u, r in built.results("pna-v1").items() if r["run_id"] == a and r["valid"]}
    answers_a, answers_b = _answers(built, "pna-v1"), _answers(built, "pna-v11")
    common = sorted(ledger_a & answers_b.keys())
    assert f["n"] == pair["valid_in_both"] == len(common) > 10
    x, y = [answers_a[u] for u in common], [answers_b[u] for u in common]
    assert f["agreement"] == pytest.approx(sum(p == q for p, q in zip(x, y)) / len(common))
    assert f["kappa"] == pytest.approx(cohen_kappa_score(x, y))
    assert f["kappa_low"] < f["kappa"] < f["kappa_high"]
    assert sorted(f["disagree"]) == sorted(u for u in common if answers_a[u] != answers_b[u]) and f["disagree"]
    assert sum(map(sum, f["matrix"])) == len(common)
    code, text, _ = built.led("compare", a, b)
    assert "Cohen's kappa" in text and "disagree (" in text and f["disagree"][0] in text
    caution = " — under 30: a wide interval, a sketch" if f["n"] < 30 else ""
    assert f"{f['kappa_high']:.3f}), n {f['n']}{caution}" in text  # n beside the kappa, and the caution where due


def test_compare_three_runs_gives_a_kappa_matrix(built):
    runs = [built.runs["pna-v1"][1], built.runs["pna-v11"][0], built.runs["pna-v11-qwen"][0]]
    result = json.loads(built.led("compare", *runs, "--json")[1])
    assert len(result["pairs"]) == 3
    m = result["kappa_matrix"]["response"]
    assert [m[i][i] for i in range(3)] == [1.0, 1.0, 1.0] and m[0][1] == m[1][0]
    # the same prompt on another model: the stand-in answers from the prompt alone, so they agree fully
    same = result["pairs"][2]["fields"]["response"]
    assert same["agreement"] == 1.0 and same["kappa"] == pytest.approx(1.0) and same["disagree"] == []
    text = built.led("compare", *runs)[1]
    assert "pairwise Cohen's kappa, response:" in text
    ns = [p["fields"]["response"]["n"] for p in result["pairs"]]
    small = sum(n < 30 for n in ns)
    assert f"  n per pair: {min(ns)} to {max(ns)} units" + (f" — under 30 in {small} pairs" if small else "") in text
    res = spawn_cli("ledger", "compare", runs[0], runs[0][:12], "--ledger", str(built.ledger))
    assert res.returncode == 2 and "needs two different runs" in res.stderr


def test_sql_views_answer_the_common_questions(built):
    db = built.ledger / "ledger.db"
    conn = sqlite3.connect(db)
    try:
        statuses = dict(conn.execute("select run_id, status from runs"))
        assert set(statuses.values()) == {"completed"} and len(statuses) == 4
        per_exp = {r[0]: r[1:] for r in conn.execute("select experiment, runs, completed, done from runs_per_experiment")}
        assert per_exp["pna-v1"] == (2, 2, 40)
        run = built.runs["pna-v11"][0]
        labels = dict(conn.execute("select label, n from label_counts where run_id = ? and field = 'response'", (run,)))
        truth = {}
        for r in built.results("pna-v11").values():
            if r["valid"]:
                truth[r["response"]] = truth.get(r["response"], 0) + 1
        assert labels == truth
        over = conn.execute("select quantization, parameter_size, valid_pct from run_overview where run_id = ?",
                            (run,)).fetchone()
        assert over[:2] == ("Q4_0", "8.0B") and 0 < over[2] <= 100
    finally:
        conn.close()
    res = subprocess.run([sys.executable, "-m", "sqlite_utils", "views", str(db)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    names = {t["view"] for t in json.loads(res.stdout) if "view" in t}
    assert {"run_overview", "runs_per_experiment", "label_counts", "outcome_counts", "eval_results"} <= names
    res = subprocess.run([sys.executable, "-m", "sqlite_utils", "query", str(db),
                          "select experiment, count(*) as n from run_overview group by experiment"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and {"experiment": "pna-v1", "n": 2} in json.loads(res.stdout)


def test_rerun_writes_the_experiment_back(tmp_path, private_ledger):
    from tests.helpers.auditkit import SOURCE, make_notes

    make_notes(tmp_path / "notes.db", n=6)
    with StandinOllama(latency=0.0) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], name="rerun-me"))
        assert run_cli("--run", str(exp))[0] == 0
        [run] = json.loads(run_cli("ledger", "list", "--json")[1])
        again = tmp_path / "again.toml"
        code, out, err = run_cli("ledger", "rerun", run["run_id"][:8], "-o", str(again))
        assert code == 0 and again.read_text() == exp.read_text() and "was made from" in err
        code, out, _ = run_cli("--run", str(again))
        assert code == 0 and "0 notes to do" in out
    code, out, _ = run_cli("ledger", "rerun", run["run_id"])
    assert code == 0 and out == exp.read_text()
    res = spawn_cli("ledger", "rerun", run["run_id"], "-o", str(again), env={"NOTES_TUI_LEDGER": str(private_ledger)})
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "the file exists" in res.stderr


def test_an_interrupted_run_and_its_resumption_make_one_report(tmp_path, private_ledger):
    import signal
    import time

    from tests.helpers.auditkit import SOURCE, make_notes
    from tests.helpers.runhelp import spawn_run

    make_notes(tmp_path / "notes.db", n=40)
    with StandinOllama(latency=0.1, slots=2) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], name="resumed", run="concurrency = 2",
                                       results='table = "pna_results"\nbatch_size = 5'))
        proc = spawn_run(exp)
        deadline = time.time() + 20
        while time.time() < deadline and server.stats()["chat"] < 12:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert run_cli("--run", str(exp))[0] == 0
    runs = json.loads(run_cli("ledger", "list", "--json")[1])
    assert sorted(r["status"] for r in runs) == ["completed", "interrupted"]
    code, out, err = run_cli("ledger", "report", *[r["run_id"] for r in runs], "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["status"] for r in data["runs"]] == ["interrupted", "completed"]  # oldest first
    assert data["flow"]["units"] == 40 and data["flow"]["to_do_first_run"] == 40
    assert data["runs"][1]["counts"]["total"] == 40 - data["runs"][0]["counts"]["done"]
    assert all(r["sealed"] is not None for r in data["runs"])
    assert len(data["timeline"][0]["points"]) > 2  # the interrupted run committed batches before it stopped


def test_no_report_table_has_an_empty_header_and_chart_axes_end_on_round_numbers(built):
    import math
    import re

    from ledger.report.svg import NICE_STEPS

    runs = built.runs["pna-v1"]
    lines = _report(built, runs, "md").splitlines()
    heads = [lines[i - 1] for i, line in enumerate(lines) if line.startswith("|---")]
    assert heads
    for head in heads:
        assert all(cell.strip() for cell in head.strip("|").split("|")), head  # every column named
    html = _report(built, runs, "html")
    ends = [float(v) for v in re.findall(r'text-anchor="end"[^>]*>([0-9.,]+)(?: [a-z/]+)?</text>', html.replace(",", ""))]
    assert len(ends) >= 4
    for value in ends:
        if value:
            mantissa = value / 10 ** math.floor(math.log10(value))
            assert any(abs(mantissa - m) < 1e-9 for m in NICE_STEPS), value
