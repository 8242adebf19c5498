"""Reviewers open the HTML reports in a browser, often on a phone: each report (a run's and a study's) is drawn by
headless Chromium at 1280 px and at 390 px, and the page must not overflow sideways (a wide table scrolls inside
itself) and every chart must be drawn. The PNGs are kept in the test's folder to look at.

The probe script is added to a copy of the report only: the shipped file has no script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.audit.test_ledger_commands import built  # noqa: F401  (a fixture: a ledger of real engine runs)
from tests.ledger.test_study_report_formats import study  # noqa: F401  (a fixture: an 8-cell study)

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTHS = (1280, 390)
PROBE = """<script>
window.addEventListener('load', () => {
  const v = WIDTH;
  const rights = [...document.body.querySelectorAll('*')]
    .filter(e => !(e.parentElement && e.parentElement.closest('table, svg')))
    .map(e => [e, e.getBoundingClientRect().right]);
  const out = rights.filter(([e, r]) => r > v + 1).map(([e, r]) => e.tagName + ':' + (e.textContent || '').slice(0, 30));
  const charts = [...document.querySelectorAll('svg')].map(s => {
    const r = s.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.right <= v + 1 && s.querySelectorAll('line, rect, circle, path, polyline').length > 2;
  });
  document.title = 'PROBE' + JSON.stringify({widest: Math.max(0, ...rights.map(([e, r]) => r)), out: out.slice(0, 5), charts});
});
</script>"""


def _need_chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("no chromium here (apt-get install chromium)")
    return CHROMIUM


def _in_browser(html_path, width: int, png) -> dict:
    chromium = _need_chromium()
    probe = html_path.with_name(html_path.stem + f"-probe{width}.html")
    # headless Chromium makes no window narrower than 500 px: the page is laid out at the phone's width instead
    narrow = f"<style>html {{ width: {width}px; }}</style>"
    script = PROBE.replace("WIDTH", str(width))
    probe.write_text(html_path.read_text().replace("</head>", narrow + "</head>").replace("</body>", script + "</body>"))
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},1600",
              "--virtual-time-budget=3000"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"<title>PROBE(.*?)</title>", dom, re.S)
    assert found, f"the probe did not run in chromium: {dom[:300]!r}"
    subprocess.run([*common, f"--screenshot={png}", probe.as_uri()], capture_output=True, timeout=120)
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _check(html_path, charts_expected: int) -> None:
    for width in WIDTHS:
        got = _in_browser(html_path, width, html_path.with_name(f"{html_path.stem}-{width}.png"))
        assert got["widest"] <= width + 1 and not got["out"], (width, got)
        assert len(got["charts"]) >= charts_expected and all(got["charts"]), (width, got)
        assert html_path.with_name(f"{html_path.stem}-{width}.png").stat().st_size > 10_000


def test_a_run_report_reads_in_a_browser_at_desktop_and_phone_width(built, tmp_path):  # noqa: F811
    code, out, err = built.led("list", "--json")
    assert code == 0, err
    run_id = json.loads(out)[0]["run_id"]
    path = tmp_path / "run-report.html"
    code, out, err = built.led("report", run_id, "--format", "html", "-o", str(path))
    assert code == 0, err
    _check(path, charts_expected=1)


def test_a_study_report_reads_in_a_browser_at_desktop_and_phone_width(study, tmp_path):  # noqa: F811
    from app.cli import main

    path = tmp_path / "study-report.html"
    assert main(["ledger", "study", "fmt-study", "--ledger", str(study[1]), "--bootstrap", "50", "--format", "html",
                 "-o", str(path)]) == 0
    _check(path, charts_expected=1)
