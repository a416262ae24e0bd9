"""compare.html: per task AUC A, AUC B, B - A with its interval and method, and an interval
plot whose ticks, dots and bars sit at the deltas; written beside compare.json."""

import json
import re

import pytest

from pipelines.jobs.compare import compare, output_paths
from recmtl.errors import RecmtlError
from recmtl.metrics.compare import INDEPENDENT, PAIRED
from recmtl.metrics.compare_html import render_compare_html
from tests.metrics.page_parts import SVG, cells, external_parts, plots, texts, tick_marks
from tests.metrics.test_compare import _run_dir, two_runs  # noqa: F401 (a fixture)

RESULT = {
    "a": "runs/a/report.json", "b": "runs/b/report.json", "resamples": 200,
    "tasks": {
        "ctr": {"auc_a": 0.7669, "auc_b": 0.7712, "delta": 0.0043, "rows": 200000,
                "delta_ci95": [0.00214, 0.00656], "method": PAIRED},
        "cvr": {"auc_a": 0.701, "auc_b": 0.699, "delta": -0.002, "rows": 40000,
                "delta_ci95": [-0.0176, 0.0136], "method": INDEPENDENT},
        "ctcvr": {"auc_a": 0.8, "auc_b": None, "delta": None, "rows": 200000,
                  "delta_ci95": None, "method": None}},
    "notes": ["independent: combined as if independent"]}


def test_table_has_aucs_delta_interval_and_method_per_task():
    page = render_compare_html(RESULT)
    assert cells(page, "row-ctr") == ["ctr", "200,000", "0.7669", "0.7712",
                                      "+0.0043 [+0.0021, +0.0066]", "paired bootstrap", "B higher"]
    assert cells(page, "row-cvr") == ["cvr", "40,000", "0.7010", "0.6990",
                                      "-0.0020 [-0.0176, +0.0136]", "independent (conservative)",
                                      "no clear difference"]
    assert cells(page, "row-ctcvr")[2:] == ["0.8000", "-", "-", "no interval", "-"]
    assert "combined as if independent" in page and "runs/b/report.json" in page
    assert external_parts(page) == []


def test_interval_plot_draws_each_delta_at_its_value_on_the_axis():
    (svg,) = plots(render_compare_html(RESULT), "deltas")
    assert texts(svg, "tick y") == ["ctr", "cvr", "ctcvr"]
    assert texts(svg, "label x") == ["AUC B - AUC A (right of the dashed line: B higher)"]
    labels, marks = texts(svg, "tick x"), tick_marks(svg, "x")
    assert labels == ["-0.02", "-0.01", "0.00", "+0.01", "+0.02"]  # -0.0176 .. +0.0136 and 0
    values = [float(v) for v in labels]

    def px(v):  # the axis as its tick marks state it
        return marks[0] + (v - values[0]) / (values[-1] - values[0]) * (marks[-1] - marks[0])

    dots = [(float(c.get("cx")), float(c.get("cy"))) for c in svg.iter(f"{SVG}circle")]
    assert [x for x, _ in dots] == pytest.approx([px(0.0043), px(-0.002)], abs=0.11)
    y_ticks = tick_marks(svg, "y")
    assert [y for _, y in dots] == pytest.approx(y_ticks[:2], abs=0.11)  # on their task's row
    bars = [line.get("points", "").split() for line in svg.iter(f"{SVG}polyline")
            if line.get("stroke-width") == "3"]
    ends = [[float(p.split(",")[0]) for p in bar] for bar in bars]
    assert ends == [pytest.approx([px(0.00214), px(0.00656)], abs=0.11),
                    pytest.approx([px(-0.0176), px(0.0136)], abs=0.11)]


def test_output_paths_put_the_page_beside_the_json(tmp_path):
    assert output_paths(tmp_path) == (tmp_path / "compare.json", tmp_path / "compare.html")
    assert output_paths(tmp_path / "new") == (tmp_path / "new" / "compare.json",
                                              tmp_path / "new" / "compare.html")
    assert output_paths(tmp_path / "ab.json") == (tmp_path / "ab.json", tmp_path / "ab.html")
    with pytest.raises(RecmtlError, match="name the JSON file"):
        output_paths(tmp_path / "ab.html")


@pytest.mark.parametrize("out", ["cmp", "cmp/a_vs_b.json"])
def test_compare_writes_json_and_html(two_runs, out, capsys):  # noqa: F811
    tmp, run_a, run_b = two_runs
    _run_dir(tmp / "a", run_a)
    _run_dir(tmp / "b", run_b)
    result = compare(str(tmp / "a"), str(tmp / "b"), out=tmp / out, resamples=20)
    json_path, html_path = output_paths(tmp / out)
    assert json.loads(json_path.read_text())["tasks"] == result["tasks"]
    page = html_path.read_text()
    printed = capsys.readouterr().out
    assert f"wrote {json_path} and {html_path}" in printed
    for name, t in result["tasks"].items():
        lo, hi = t["delta_ci95"]
        interval = f"{t['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        assert cells(page, f"row-{name}")[4] == interval
        assert cells(page, f"row-{name}")[5] == "paired bootstrap"
        assert re.search(rf"^{name} .* {re.escape(interval)} +paired_bootstrap$", printed, re.M)


def test_deltas_of_zero_still_get_a_readable_axis():
    tasks = {"ctr": {"auc_a": 0.7, "auc_b": 0.7, "delta": 0.0, "rows": 10, "delta_ci95": [0.0, 0.0],
                     "method": PAIRED}}
    (svg,) = plots(render_compare_html({"a": "a", "b": "b", "tasks": tasks, "notes": []}), "deltas")
    labels = texts(svg, "tick x")
    assert labels == ["-0.0010", "-0.0005", "0.0000", "+0.0005", "+0.0010"]
