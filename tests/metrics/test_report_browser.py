"""report.html in a real headless browser (Chromium): it renders every task section, every
plot and the gate heatmaps, and the browser reports no error about the page."""

import re
import shutil
import subprocess

import pytest

from recmtl.metrics.html import render_html
from tests.metrics.helpers import funnel_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
    "google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")


def test_report_renders_in_headless_chromium(tmp_path):
    report = funnel_report(n=2000, groups=40, bootstrap=20)
    n = report["rows"]
    report["diagnostics"] = {"gates": {"gate": {"mass": [[0.6, 0.4], [0.3, 0.7]],
                                                "entropy": [0.67, 0.61], "rows": n}},
                             "experts": {"experts": {"nonpositive_share": [0.4, 0.5]}}}
    page = tmp_path / "report.html"
    page.write_text(render_html(report))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for task in ("ctr", "cvr", "ctcvr"):
        assert f'id="task-{task}"' in dom and f'id="row-{task}"' in dom
    assert len(re.findall(r"<svg[^>]*class=\"plot (roc|calibration|histogram)\"", dom)) == 9
    assert len(re.findall(r'<rect[^>]*class="cell"', dom)) == 4  # the 2 x 2 gate heatmap
    # page-level problems the browser logs: script errors, failed loads, bad markup
    problems = [line for line in done.stderr.splitlines()
                if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line]
    assert not problems, problems
