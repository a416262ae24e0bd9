"""report.html and compare.html in a real headless browser (Chromium): every task section,
plot and gate heatmap is in the rendered page, a screenshot shows a drawn page (not a blank
one), and the browser reports no error about either page."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from recmtl.metrics.compare_html import render_compare_html
from recmtl.metrics.html import render_html
from tests.metrics.helpers import funnel_report
from tests.metrics.test_compare_html import RESULT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
    "google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")


def _chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _problems(stderr: str) -> list[str]:
    """Page-level problems the browser logs: console messages, script errors, failed loads."""
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line]


def _screenshot(page: Path) -> tuple[Image.Image, list[str]]:
    shot = page.with_suffix(".png")
    done = _chromium(page, "--window-size=1200,1600", f"--screenshot={shot}")
    assert shot.stat().st_size > 0
    return Image.open(shot).convert("RGB"), _problems(done.stderr)


def _drawn(image: Image.Image) -> tuple[int, float]:
    """Distinct colours, and the share of pixels that are not page white."""
    colours = image.getcolors(maxcolors=image.width * image.height) or []
    white = next((n for n, c in colours if c == (255, 255, 255)), 0)
    return len(colours), 1 - white / (image.width * image.height)


def _report():
    report = funnel_report(n=2000, groups=40, bootstrap=20)
    report["diagnostics"] = {"gates": {"gate": {"mass": [[0.6, 0.4], [0.3, 0.7]],
                                                "entropy": [0.67, 0.61], "rows": report["rows"]}},
                             "experts": {"experts": {"nonpositive_share": [0.4, 0.5]}},
                             "tasks": ["ctr", "cvr"]}
    return report


def test_report_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(_report()))
    done = _chromium(page, "--dump-dom")
    dom = done.stdout
    for task in ("ctr", "cvr", "ctcvr"):
        assert f'id="task-{task}"' in dom and f'id="row-{task}"' in dom
    assert len(re.findall(r"<svg[^>]*class=\"plot (roc|calibration|histogram)\"", dom)) == 9
    assert len(re.findall(r'<rect[^>]*class="cell"', dom)) == 4  # the 2 x 2 gate heatmap
    for svg in re.findall(r'<svg[^>]*class="plot (?:roc|calibration|histogram)".*?</svg>', dom):
        assert svg.count('<text class="tick x"') >= 3 and svg.count('<text class="tick y"') >= 3
    assert not _problems(done.stderr)


@pytest.mark.parametrize("which", ["report", "compare"])
def test_screenshot_shows_a_drawn_page_and_no_errors(tmp_path, which):
    page = tmp_path / f"{which}.html"
    page.write_text(render_html(_report()) if which == "report" else render_compare_html(RESULT))
    image, problems = _screenshot(page)
    colours, ink = _drawn(image)
    assert image.size == (1200, 1600)
    assert colours > 50, colours  # text, plot lines, fills and their anti-aliasing
    assert ink > 0.02, ink
    assert not problems, problems


def test_the_checks_see_a_blank_page_and_a_broken_one(tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    image, problems = _screenshot(blank)
    assert _drawn(image) == (1, 0.0) and not problems
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("bad");'
                      'throw new Error("boom")</script></body></html>')
    _, problems = _screenshot(broken)
    assert any('"bad"' in p for p in problems) and any("Uncaught Error: boom" in p for p in problems)
