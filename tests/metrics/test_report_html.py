"""report.html: every plot has tick values and axis labels where the data are, the gate
heatmaps name their rows, intervals print as ``0.7669 [0.7633, 0.7706]``, nothing external."""

import re

import numpy as np
import pytest
import torch

from recmtl.config.schema import ModelConfig
from recmtl.metrics.html import render_html
from recmtl.metrics.report import format_table
from recmtl.models.architecture import BackboneInputs
from recmtl.models.registry import ARCHITECTURES
from recmtl.modules.diagnostics import ExpertProbe
from tests.metrics.helpers import funnel_report
from tests.metrics.page_parts import (
    cells,
    external_parts,
    plots,
    polyline_points,
    texts,
    tick_marks,
)


def _report():
    """One task with hand-made curves: reliability up to 0.24, histogram up to 730 rows."""
    return {"rows": 1000, "tasks": {"ctr": {
        "label": "click", "space": None, "rows": 1000, "positives": 120,
        "auc": 0.76694, "auc_ci95": [0.76331, 0.77062], "oracle_auc": None, "gauc": None,
        "logloss": 0.3, "ne": 0.9, "calibration": 1.01, "ece": 0.01,
        "curves": {"roc": {"fpr": [0.0, 0.1, 0.5, 1.0], "tpr": [0.0, 0.4, 0.8, 1.0]},
                   "reliability": [{"predicted": 0.05, "observed": 0.04, "rows": 500},
                                   {"predicted": 0.22, "observed": 0.24, "rows": 500}],
                   "histogram": {"edges": np.linspace(0, 1, 21).tolist(),
                                 "counts": [730.0, 300.0] + [0.0] * 18}}}}}


TENTHS = ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]


@pytest.mark.parametrize(("kind", "xticks", "yticks", "xlabel", "ylabel"), [
    ("roc", TENTHS, TENTHS, "false positive rate", "true positive rate"),
    # axis to 0.24 * 1.05 rounded up to a 0.1 step
    ("calibration", ["0.0", "0.1", "0.2", "0.3"], ["0.0", "0.1", "0.2", "0.3"],
     "mean predicted probability", "observed rate"),
    ("histogram", TENTHS, ["0", "200", "400", "600", "800"], "predicted probability", "rows"),
])
def test_every_plot_has_tick_values_and_axis_labels(kind, xticks, yticks, xlabel, ylabel):
    (svg,) = plots(render_html(_report()), kind)
    assert texts(svg, "tick x") == xticks and texts(svg, "tick y") == yticks
    assert len(tick_marks(svg, "x")) == len(xticks) and len(tick_marks(svg, "y")) == len(yticks)
    assert texts(svg, "label x") == [xlabel] and texts(svg, "label y") == [ylabel]


def _at(ticks: list[float], labels: list[str], value: float, top: float) -> float:
    """Pixel of ``value`` by linear interpolation between the first and last tick marks."""
    assert float(labels[0]) == 0 and float(labels[-1]) == top
    return ticks[0] + value / top * (ticks[-1] - ticks[0])


def test_ticks_sit_where_the_data_are():
    page = render_html(_report())
    (roc,) = plots(page, "roc")
    curve = polyline_points(roc)[-1]  # the ROC curve, drawn after the diagonal
    xs, ys = tick_marks(roc, "x"), tick_marks(roc, "y")
    for (px, py), fpr, tpr in zip(curve, [0.0, 0.1, 0.5, 1.0], [0.0, 0.4, 0.8, 1.0], strict=True):
        assert px == pytest.approx(_at(xs, TENTHS, fpr, 1.0), abs=0.11)
        assert py == pytest.approx(_at(ys, TENTHS, tpr, 1.0), abs=0.11)
    (hist,) = plots(page, "histogram")
    labels = texts(hist, "tick y")
    bars = [r for r in hist.iter("{http://www.w3.org/2000/svg}rect") if r.get("fill") == "#2ca02c"]
    tallest = min(float(b.get("y")) for b in bars)  # SVG y grows downwards
    assert tallest == pytest.approx(_at(tick_marks(hist, "y"), labels, 730, 800), abs=0.11)


def test_intervals_print_in_one_format_in_the_page_and_the_table():
    assert cells(render_html(_report()), "row-ctr")[4] == "0.7669 [0.7633, 0.7706]"
    report = funnel_report(bootstrap=30)
    page, table = render_html(report), format_table(report)
    for name, m in report["tasks"].items():
        lo, hi = m["auc_ci95"]
        want = f"{m['auc']:.4f} [{lo:.4f}, {hi:.4f}]"
        assert cells(page, f"row-{name}")[4] == want
        assert any(line.startswith(name) and want in line for line in table.splitlines())
    visible = re.sub(r"<[^>]+>", " ", page)
    assert not re.findall(r"\d\.\d{5,}", visible + table)  # no long floats anywhere


def test_gate_heatmap_rows_are_named_by_task_and_columns_by_expert():
    report = _report()
    report["diagnostics"] = {"gates": {"gate": {"mass": [[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]],
                                                "entropy": [0.9, 0.8], "rows": 10}},
                             "experts": {"experts": {"nonpositive_share": [0.4, 0.5, 0.93]}},
                             "tasks": ["ctr", "cvr"]}
    (svg,) = plots(render_html(report), "gates")
    assert texts(svg, "row") == ["ctr", "cvr"] and texts(svg, "expert") == ["e0", "e1", "e2"]
    del report["diagnostics"]["tasks"]  # an older report.json: rows are numbered
    (svg,) = plots(render_html(report), "gates")
    assert texts(svg, "row") == ["row 0", "row 1"]


@pytest.mark.parametrize(("arch", "expected"), [
    ("mmoe", {"gate": ["ctr", "cvr"]}),
    ("ple", {"levels.0.gates.0": ["ctr"], "levels.0.gates.1": ["cvr"],
             "levels.0.shared_gate": ["shared"], "levels.1.gates.1": ["cvr"]}),
    ("adatt", {"levels.1.gates.0": ["ctr"], "levels.0.shared_gate": ["shared"]}),
    ("home", {"task_gates.0": ["ctr"], "task_gates.1": ["cvr"], "global_gate": ["global"],
              "group_gates.0": ["group 0"]}),
])
def test_every_architectures_gates_get_named_rows(arch, expected):
    # The gates a real backbone has, as `recmtl evaluate` probes them.
    backbone = ARCHITECTURES[arch].build(ModelConfig(arch=arch), BackboneInputs.flat(8), ["ctr", "cvr"])
    probe = ExpertProbe(backbone)
    with probe, torch.no_grad():
        backbone(torch.randn(16, 8))
    report = _report() | {"diagnostics": probe.summary() | {"tasks": ["ctr", "cvr"]}}
    heatmaps = {svg.get("aria-label", "").removeprefix("gate "): texts(svg, "row")
                for svg in plots(render_html(report), "gates")}
    assert set(heatmaps) == set(probe.summary()["gates"])
    assert {k: heatmaps[k] for k in expected} == expected
    assert not [rows for rows in heatmaps.values() if any(r.startswith("row ") for r in rows)]


def test_the_page_is_self_contained():
    report = funnel_report(bootstrap=10)
    report["diagnostics"] = {"gates": {"gate": {"mass": [[0.5, 0.5]], "entropy": [0.7],
                                                "rows": 1}}, "experts": {}}
    assert external_parts(render_html(report)) == []
    # the check sees what it looks for
    assert external_parts('<p><script>x()</script><img src="a.png"><a href="http://x">') == [
        "<script>", "<img>", "img src=a.png", "a href=http://x"]
