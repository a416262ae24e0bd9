import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recmtl.config import TaskConfig
from recmtl.metrics.html import render_html
from recmtl.metrics.ranking import rank
from recmtl.metrics.report import build_report
from recmtl.metrics.slices import SliceColumn, slice_table


def _sk_auc(y, s):
    return roc_auc_score(y, s) if len(np.unique(y)) == 2 else None


def _data(n=6000, seed=0, cardinality=12):
    rng = np.random.default_rng(seed)
    column = rng.zipf(1.6, n) % cardinality  # skewed volumes
    y = (rng.random(n) < 0.1 + 0.02 * (column % 5)).astype(float)
    s = np.round(rng.random(n) + 0.3 * y + 0.05 * column, 2)  # ties, and a slice effect
    return y, s, column


@pytest.mark.parametrize("seed", range(3))
def test_per_slice_auc_matches_sklearn(seed):
    y, s, column = _data(seed=seed)
    col = SliceColumn.from_array(column)
    table = slice_table(y, rank(y, s), col.codes, col.values, max_slices=100)
    assert {e["value"] for e in table} == set(np.unique(column).tolist())
    assert [e["rows"] for e in table] == sorted((e["rows"] for e in table), reverse=True)
    for e in table:
        m = column == e["value"]
        assert (e["rows"], e["positives"]) == (m.sum(), y[m].sum())
        want = _sk_auc(y[m], s[m])
        assert e["auc"] == (None if want is None else pytest.approx(want, abs=1e-12))


def test_small_slices_pool_into_other():
    y, s, column = _data(seed=1, cardinality=30)
    col = SliceColumn.from_array(column)
    table = slice_table(y, rank(y, s), col.codes, col.values, max_slices=5)
    values, counts = np.unique(column, return_counts=True)
    top = values[np.lexsort((values, -counts))][:5]
    assert [e["value"] for e in table[:5]] == top.tolist()
    other = table[5]
    rest = ~np.isin(column, top)
    assert other["value"] is None and other["other"] == len(values) - 5
    assert (other["rows"], other["positives"]) == (rest.sum(), y[rest].sum())
    assert other["auc"] == pytest.approx(roc_auc_score(y[rest], s[rest]), abs=1e-12)
    assert len(table) == 6


def test_string_slices_and_one_class_slice():
    y = np.array([1, 0, 1, 0, 0, 0, 1, 1], dtype=float)
    s = np.array([0.9, 0.1, 0.4, 0.4, 0.3, 0.2, 0.8, 0.7])
    column = np.array(["ios", "ios", "ios", "ios", "web", "web", "tv", "tv"])
    col = SliceColumn.from_array(column)
    table = {e["value"]: e for e in slice_table(y, rank(y, s), col.codes, col.values)}
    assert table["ios"]["auc"] == pytest.approx(roc_auc_score(y[:4], s[:4]))  # 0.875, one tie
    assert table["web"]["auc"] is None and table["tv"]["auc"] is None  # one class each


def test_report_slices_live_in_each_task_sample_space():
    rng = np.random.default_rng(3)
    n = 5000
    click = (rng.random(n) < 0.3).astype(float)
    conv = click * (rng.random(n) < 0.4)
    segment = rng.integers(0, 6, n)
    cols = {"click": click, "conversion": conv,
            "pred/ctr": np.clip(0.3 + 0.2 * click + 0.2 * rng.normal(size=n), 0.01, 0.99),
            "pred/cvr": np.clip(0.4 + 0.2 * conv + 0.2 * rng.normal(size=n), 0.01, 0.99)}
    tasks = (TaskConfig("ctr", "click"), TaskConfig("cvr", "conversion", space="click"))
    report = build_report(tasks, cols, bootstrap=0, slices={"segment": SliceColumn.from_array(segment)})
    cvr = {e["value"]: e for e in report["tasks"]["cvr"]["slices"]["segment"]}
    for v, e in cvr.items():
        m = (segment == v) & (click == 1)
        assert e["rows"] == m.sum()
        assert e["auc"] == pytest.approx(roc_auc_score(conv[m], cols["pred/cvr"][m]), abs=1e-12)
    assert sum(e["rows"] for e in report["tasks"]["ctr"]["slices"]["segment"]) == n
    page = render_html(report)
    assert 'id="slices-cvr-segment"' in page and f"{cvr[0]['auc']:.4f}" in page
