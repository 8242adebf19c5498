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
    import tomllib

    names = [c["name"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]]
    assert names, "pyproject.toml declares no import-linter contract"
    # lint-imports wraps long names at the terminal's width, so compare with whitespace collapsed
    report = " ".join(res.stdout.split())
    for name in names:  # each one declared was checked and held
        assert f"{' '.join(name.split())} KEPT" in report, res.stdout
    assert " 0 broken" in res.stdout, res.stdout


def test_no_import_cycle_among_the_projects_modules():
    """Counting imports inside functions too (what runs at some point), not those under TYPE_CHECKING."""
    tool = ROOT / "tools" / "import_cycles.py"
    res = subprocess.run([sys.executable, str(tool), ".", "app", "ledger"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and " 0 cycles" in res.stdout, res.stdout + res.stderr


def test_headless_modules_load_neither_textual_nor_the_app_from_the_ledger():
    code = (
        "import sys, app.engine.runner, app.cli.run, app.backends.ollama, app.sources.mysql, app.sources.sqlite\n"
        "assert 'textual' not in sys.modules, 'textual loaded by the engine'\n"
        "for m in list(sys.modules):\n"
        "    if m == 'app' or m.startswith('app.'): del sys.modules[m]\n"
        "import ledger, ledger.index, ledger.journal\n"
        "assert not any(m == 'app' or m.startswith('app.') for m in sys.modules), 'the ledger imported the app'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
