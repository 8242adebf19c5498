"""The arrows of DESIGN.md, checked: the engine knows no screen, the ledger knows no app."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.helpers.support import ROOT, need


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports")
    need(exe is not None, "import-linter is not installed (pip install -e '.[test]')")
    res = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 2 kept, 0 broken" in res.stdout, res.stdout


def test_headless_modules_load_neither_textual_nor_the_app_from_the_ledger():
    code = (
        "import sys, app.engine.runner, app.headless, app.backends.ollama, app.sources.mysql, app.sources.sqlite\n"
        "assert 'textual' not in sys.modules, 'textual loaded by the engine'\n"
        "for m in list(sys.modules):\n"
        "    if m == 'app' or m.startswith('app.'): del sys.modules[m]\n"
        "import ledger, ledger.index, ledger.journal\n"
        "assert not any(m == 'app' or m.startswith('app.') for m in sys.modules), 'the ledger imported the app'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
