import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recmtl.config import TaskConfig
from recmtl.metrics.html import render_html
from recmtl.metrics.report import build_report, format_table

TASKS = (TaskConfig("ctr", "click", oracle="p_click"),
         TaskConfig("cvr", "conversion", space="click", oracle="p_cvr"),
         TaskConfig("ctcvr", "conversion", product_of=("ctr", "cvr")))


def _cols(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    p_click, p_cvr = rng.uniform(0.05, 0.6, n), rng.uniform(0.1, 0.7, n)
    click = (rng.random(n) < p_click).astype(float)
    conv = click * (rng.random(n) < p_cvr)
    pred = np.clip(p_click * p_cvr + 0.05 * rng.normal(size=n), 0.001, 0.999)
    return {"click": click, "conversion": conv, "p_click": p_click, "p_cvr": p_cvr,
            "pred/ctcvr": pred}


def test_only_scored_tasks_are_reported_and_composed_oracles_still_resolve():
    # A bundle serving only ctcvr: its oracle is the product of the unserved parts' oracles.
    cols = _cols()
    report = build_report(TASKS, cols, bootstrap=0)
    assert list(report["tasks"]) == ["ctcvr"]
    m = report["tasks"]["ctcvr"]
    assert m["auc"] == pytest.approx(roc_auc_score(cols["conversion"], cols["pred/ctcvr"]), abs=1e-12)
    oracle = cols["p_click"] * cols["p_cvr"]
    assert m["oracle_auc"] == pytest.approx(roc_auc_score(cols["conversion"], oracle), abs=1e-12)


def test_regression_task_gets_its_own_metrics():
    rng = np.random.default_rng(1)
    n = 500
    click = (rng.random(n) < 0.5).astype(float)
    watch = rng.gamma(2.0, size=n)
    cols = {"click": click, "watch": watch, "pred/watch": watch + rng.normal(size=n),
            "pred/ctr": rng.random(n)}
    tasks = (TaskConfig("ctr", "click"), TaskConfig("watch", "watch", kind="regression", space="click"))
    timings: dict[str, float] = {}
    report = build_report(tasks, cols, bootstrap=10, timings=timings)
    m = report["tasks"]["watch"]
    err = (cols["pred/watch"] - watch)[click == 1]
    assert m["kind"] == "regression" and m["rows"] == (click == 1).sum()
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert "rmse" in format_table(report) and "regression" in render_html(report)
    assert {"rank", "auc", "bootstrap", "curves", "ece"} <= set(timings)
