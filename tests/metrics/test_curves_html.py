import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_curve

from recmtl.config import TaskConfig
from recmtl.metrics.auc import auc
from recmtl.metrics.bootstrap import auc_interval
from recmtl.metrics.calibration import ece_equal_mass
from recmtl.metrics.curves import normalized_entropy, reliability_bins, roc_points
from recmtl.metrics.html import render_html
from recmtl.metrics.report import build_report
from tests.metrics.helpers import FUNNEL, funnel_report


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    s = np.round(rng.random(n) * 0.7 + 0.3 * y, 2)  # ties
    return y, s


def test_roc_points_match_sklearn():
    y, s = _data()
    fpr, tpr = roc_points(y, s, max_points=10**9)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    thin_fpr, _ = roc_points(y, s, max_points=20)
    assert len(thin_fpr) <= 20 and thin_fpr[0] == 0 and thin_fpr[-1] == 1


def test_normalized_entropy_hand_worked():
    y, s = _data()
    p = np.clip(s, 0.01, 0.99)
    rate = y.mean()
    expected = log_loss(y, p) / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    assert normalized_entropy(y, p) == pytest.approx(expected, rel=1e-9)
    assert normalized_entropy(y, np.full(len(y), rate)) == pytest.approx(1.0, rel=1e-9)


def test_bootstrap_interval_agrees_with_hanley_mcneil():
    y, s = _data(n=20000, seed=1)
    a = auc(y, s)
    lo, hi = auc_interval(y, s, resamples=200, seed=0)
    p, n = y.sum(), len(y) - y.sum()
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (p - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (p * n))
    assert lo < a < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.3)
    assert auc_interval(y, s, resamples=200, seed=0) == (lo, hi)  # seeded


def test_reliability_bins_reproduce_the_ece():
    y, s = _data()
    bins = reliability_bins(y, s, bins=10)
    assert sum(b["rows"] for b in bins) == len(y)
    ece = sum(b["rows"] / len(y) * abs(b["predicted"] - b["observed"]) for b in bins)
    assert ece == pytest.approx(ece_equal_mass(y, s, bins=10), abs=1e-12)


def test_html_has_every_task_and_every_plot():
    tasks = FUNNEL
    report = funnel_report()
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    svgs = re.findall(r"<svg .*?</svg>", page)
    assert len(svgs) == 3 * len(tasks)
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    for name, m in report["tasks"].items():
        assert f'id="task-{name}"' in page and f'id="row-{name}"' in page
        assert f"{m['auc']:.4f}" in page
        for kind in ("roc", "calibration", "histogram"):
            assert f'class="plot {kind}"' in page


def test_html_draws_one_gate_heatmap_cell_per_task_and_expert():
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.3).astype(float)
    report = build_report((TaskConfig("ctr", "click"),), {"click": y, "pred/ctr": rng.random(200)},
                          bootstrap=0)
    report["diagnostics"] = {
        "gates": {"gate": {"mass": [[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]], "entropy": [0.8, 0.4],
                           "rows": 200},
                  "levels.0.shared_gate": {"mass": [[0.5, 0.5]], "entropy": [0.69], "rows": 200}},
        "experts": {"experts": {"nonpositive_share": [0.5, 0.93, 0.1]}}}
    page = render_html(report)
    heatmaps = re.findall(r'<svg class="plot gates".*?</svg>', page)
    assert len(heatmaps) == 2
    cells = [re.findall(r'class="cell"[^>]*fill-opacity="([0-9.]+)"', h) for h in heatmaps]
    assert [float(v) for v in cells[0]] == [0.7, 0.2, 0.1, 0.05, 0.05, 0.9]
    assert len(cells[1]) == 2
    for svg in heatmaps:
        ET.fromstring(svg)
    assert "0.9300" in page  # the dead share of expert 1
