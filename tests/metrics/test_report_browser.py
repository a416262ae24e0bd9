"""report.html in a real headless browser (Chromium): it renders every task section, every
plot and the gate heatmaps, and the browser reports no error about the page."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from recmtl.config import TaskConfig
from recmtl.metrics.html import render_html
from recmtl.metrics.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
    "google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")


def test_report_renders_in_headless_chromium(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    click = (rng.random(n) < 0.2).astype(float)
    conv = click * (rng.random(n) < 0.3)
    cols = {"click": click, "conversion": conv, "group": rng.integers(0, 40, n).astype(float),
            "pred/ctr": np.clip(0.2 + 0.1 * click + 0.05 * rng.normal(size=n), 0.01, 0.99),
            "pred/cvr": rng.random(n)}
    cols["pred/ctcvr"] = cols["pred/ctr"] * cols["pred/cvr"]
    tasks = (TaskConfig("ctr", "click"), TaskConfig("cvr", "conversion", space="click"),
             TaskConfig("ctcvr", "conversion", product_of=("ctr", "cvr")))
    report = build_report(tasks, cols, bootstrap=20)
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
