"""A ledger built by real engine runs against the stand-in Ollama server, for the audit-command tests.

Three experiments over one SQLite notes table (40 notes with a gold column, two of them empty):
- `pna-v1` in two runs (--limit 15, then the rest): one experiment, reported together;
- `pna-v11`: another user template (the stand-in's answers depend on the prompt, so they differ from v1);
- `pna-v11-qwen`: the same template on another model: the same answers (the stand-in answers from the prompt).
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.support import ROOT, experiment_toml
from tests.standin.standin_ollama import StandinOllama

NOTE_MARK = "SECRETNOTE"
GOLD = ("yes", "no", "unsure")
GOLD_MAP = 'map = { "yes" = "(1) Likely", "no" = "(2) Unlikely", "unsure" = "(3) Unable to say" }'
SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
EVALUATION = f'[evaluation]\ngold_column = "gold"\n{GOLD_MAP}\n'


def run_cli(*args: str) -> tuple[int, str, str]:
    """The CLI in this process (fast); what it printed on stdout and stderr."""
    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return int(code), out.getvalue(), err.getvalue()


def spawn_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user starts it, in its own process: what a mistake really prints (one line, no traceback)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=120)


def make_notes(path: Path, n: int = 40) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, gold TEXT, note_text TEXT)")
    rows = [(i, GOLD[i % 3] if i % 13 else None,  # a few notes have no gold label
             None if i in (7, 21) else f"CHEST X-RAY {i}: {NOTE_MARK}-{i} patchy opacity {'right' if i % 2 else 'left'}")
            for i in range(n)]
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()


@dataclass
class BuiltLedger:
    root: Path
    ledger: Path
    notes: Path
    experiments: dict[str, Path] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)  # experiment -> run ids, oldest first

    def results(self, experiment: str) -> dict[str, dict]:
        """The results table rows of one experiment, by unit id: the truth the ledger must agree with."""
        conn = sqlite3.connect(self.notes)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM pna_results WHERE experiment = ?", (experiment,)).fetchall()
        finally:
            conn.close()
        return {str(r["note_id"]): dict(r) for r in rows}

    def gold(self) -> dict[str, str | None]:
        conn = sqlite3.connect(self.notes)
        try:
            return {str(i): g for i, g in conn.execute("SELECT note_id, gold FROM notes")}
        finally:
            conn.close()

    def led(self, *args: str) -> tuple[int, str, str]:
        return run_cli("ledger", *args, "--ledger", str(self.ledger))


def write_experiment(root: Path, url: str, name: str, model: str = "llama3", template_word: str = "suggest",
                     extra: str = EVALUATION) -> Path:
    path = root / f"{name}.toml"
    text = experiment_toml(source=SOURCE, hosts=[url], name=name, model=model, extra=extra)
    text = text.replace("Does this note suggest", f"Does this note {template_word}")
    text = text.replace(f'name = "{name}"\n', f'name = "{name}"\ndescription = "Pneumonia, prompt {template_word}"\n', 1)
    path.write_text(text)
    return path


def build(root: Path) -> BuiltLedger:
    root.mkdir(parents=True, exist_ok=True)
    built = BuiltLedger(root=root, ledger=root / "ledger", notes=root / "notes.db")
    make_notes(built.notes)
    with StandinOllama(latency=0.002, slots=4, models=("llama3", "qwen2.5:7b")) as server:
        plan = [("pna-v1", "llama3", "suggest", ("--limit", "15")), ("pna-v1", "llama3", "suggest", ()),
                ("pna-v11", "llama3", "indicate", ()), ("pna-v11-qwen", "qwen2.5:7b", "indicate", ())]
        for name, model, word, extra in plan:
            exp = built.experiments.get(name) or write_experiment(root, server.url, name, model, word)
            built.experiments[name] = exp
            code, out, err = run_cli("--run", str(exp), "--ledger", str(built.ledger), *extra)
            assert code == 0, out + err
    from ledger import Ledger

    for run in reversed(Ledger(built.ledger).list_runs()):
        built.runs.setdefault(run["experiment"], []).append(run["run_id"])
    return built
