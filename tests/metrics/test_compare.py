import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.cli import main
from pipelines.jobs.compare import compare
from recmtl.config import TaskConfig
from recmtl.metrics.compare import (
    INDEPENDENT,
    PAIRED,
    compare_reports,
    independent_delta,
    paired_auc_delta,
    poisson_row_weights,
)
from recmtl.metrics.report import build_report

TASKS = (TaskConfig("ctr", "click"), TaskConfig("cvr", "conversion", space="click"))


def _two_models(n, seed):
    """Labels and two correlated score columns: B sees a little more of the signal."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(float)
    shared = rng.normal(size=n)
    a = np.round(0.8 * y + shared + 0.6 * rng.normal(size=n), 2)
    b = np.round(0.9 * y + shared + 0.6 * rng.normal(size=n), 2)
    return y, a, b


def _delong_delta_se(y, a, b):
    """DeLong's paired standard error of AUC(b) - AUC(a), from placement values."""
    def placements(s):
        pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
        v10 = (np.searchsorted(neg, s[y == 1], "left") + np.searchsorted(neg, s[y == 1], "right"))
        v01 = (np.searchsorted(pos, s[y == 0], "left") + np.searchsorted(pos, s[y == 0], "right"))
        return v10 / (2 * len(neg)), 1 - v01 / (2 * len(pos))

    (a10, a01), (b10, b01) = placements(a), placements(b)
    d10, d01 = b10 - a10, b01 - a01
    return np.sqrt(d10.var(ddof=1) / len(d10) + d01.var(ddof=1) / len(d01))


def test_paired_bootstrap_equals_a_brute_force_one_with_the_same_weights():
    y, a, b = _two_models(800, 0)
    got = paired_auc_delta(y, a, b, resamples=60, seed=3)
    rng = np.random.default_rng(3)  # the same Poisson(1) row weights, AUCs by sklearn
    deltas = []
    for _ in range(60):
        w = poisson_row_weights(len(y), rng)
        deltas.append(roc_auc_score(y, b, sample_weight=w) - roc_auc_score(y, a, sample_weight=w))
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    assert got.method == PAIRED
    assert got.delta == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a), abs=1e-12)
    assert (got.lo, got.hi) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


def test_paired_interval_agrees_with_delong_and_beats_independent():
    y, a, b = _two_models(6000, 1)
    paired = paired_auc_delta(y, a, b, resamples=300, seed=0)
    assert (paired.hi - paired.lo) == pytest.approx(2 * 1.96 * _delong_delta_se(y, a, b), rel=0.2)
    assert paired.lo < paired.delta < paired.hi
    ra = build_report(TASKS[:1], {"click": y, "pred/ctr": a}, bootstrap=300)["tasks"]["ctr"]
    rb = build_report(TASKS[:1], {"click": y, "pred/ctr": b}, bootstrap=300)["tasks"]["ctr"]
    indep = independent_delta(ra["auc"], ra["auc_ci95"], rb["auc"], rb["auc_ci95"])
    half = np.hypot(*(np.diff(r["auc_ci95"])[0] / 2 for r in (ra, rb)))
    assert (indep.lo, indep.hi) == pytest.approx((indep.delta - half, indep.delta + half))
    # Shared rows make the two AUCs move together: pairing removes that noise.
    assert (paired.hi - paired.lo) < 0.7 * (indep.hi - indep.lo)


def _run_dir(path, cols, preds=True):
    path.mkdir()
    report = build_report(TASKS, cols, bootstrap=100)
    (path / "report.json").write_text(json.dumps(report))
    if preds:
        pq.write_table(pa.table({"click": cols["click"].astype(np.int8),
                                 "conversion": cols["conversion"].astype(np.int8),
                                 "pred/ctr": cols["pred/ctr"].astype(np.float32),
                                 "pred/cvr": cols["pred/cvr"].astype(np.float32)}),
                       path / "predictions.parquet")
    return report


@pytest.fixture
def two_runs(tmp_path):
    rng = np.random.default_rng(4)
    n = 3000
    click = (rng.random(n) < 0.3).astype(float)
    conv = click * (rng.random(n) < 0.4)
    noise = rng.normal(size=(3, n))

    def probs(x):
        return (1 / (1 + np.exp(-x))).astype(np.float32).astype(np.float64)

    base = {"click": click, "conversion": conv}
    run_a = base | {"pred/ctr": probs(click + noise[0]), "pred/cvr": probs(conv + noise[1])}
    run_b = base | {"pred/ctr": probs(1.3 * click + noise[0]), "pred/cvr": probs(conv + noise[2])}
    return tmp_path, run_a, run_b


def test_cli_compare_pairs_two_report_dirs(two_runs, capsys):
    tmp, run_a, run_b = two_runs
    ra, rb = _run_dir(tmp / "a", run_a), _run_dir(tmp / "b", run_b)
    assert main(["compare", str(tmp / "a"), str(tmp / "b" / "report.json"), "--out",
                 str(tmp / "cmp"), "--resamples", "50"]) == 0
    result = json.loads((tmp / "cmp" / "compare.json").read_text())
    for name in ("ctr", "cvr"):
        t = result["tasks"][name]
        assert t["method"] == PAIRED
        assert t["delta"] == pytest.approx(rb["tasks"][name]["auc"] - ra["tasks"][name]["auc"],
                                           abs=1e-12)
        keep = run_a["click"] > 0.5 if name == "cvr" else slice(None)
        want = paired_auc_delta(run_a[TASKS[name == "cvr"].label][keep],
                                run_a[f"pred/{name}"][keep], run_b[f"pred/{name}"][keep],
                                resamples=50, seed=0)
        assert t["delta_ci95"] == pytest.approx([want.lo, want.hi], abs=1e-12)
    out = capsys.readouterr().out
    assert "paired_bootstrap" in out and "ctr" in out and "cvr" in out


def test_compare_without_predictions_says_independent(two_runs, capsys):
    tmp, run_a, run_b = two_runs
    _run_dir(tmp / "a", run_a)
    _run_dir(tmp / "b", run_b, preds=False)
    result = compare(str(tmp / "a"), str(tmp / "b"), out=tmp / "c.json", resamples=20)
    assert {t["method"] for t in result["tasks"].values()} == {INDEPENDENT}
    assert json.loads((tmp / "c.json").read_text())["tasks"].keys() == {"ctr", "cvr"}
    assert "combined as if independent" in capsys.readouterr().out


def test_predictions_on_other_rows_are_not_paired(two_runs):
    _, run_a, run_b = two_runs
    ra = build_report(TASKS, run_a, bootstrap=50)
    rb = build_report(TASKS, run_b, bootstrap=50)
    shuffled = {k: v[::-1] for k, v in run_b.items()}
    result = compare_reports(ra, rb, run_a, shuffled, resamples=20)
    assert result["tasks"]["ctr"]["method"] == INDEPENDENT
    assert any("different rows" in n for n in result["notes"])


def test_compare_fetches_reports_from_mlflow_run_ids(two_runs, monkeypatch):
    from mlflow.tracking import MlflowClient

    tmp, run_a, run_b = two_runs
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)  # no global tracking URI: other tests keep theirs
    experiment = client.create_experiment("cmp", artifact_location=(tmp / "art").as_uri())
    ids = []
    for name, cols in (("a", run_a), ("b", run_b)):
        _run_dir(tmp / name, cols)
        run_id = client.create_run(experiment).info.run_id
        client.log_artifact(run_id, str(tmp / name / "report.json"))  # as `recmtl train` does
        client.log_artifact(run_id, str(tmp / name / "predictions.parquet"))
        ids.append(run_id)
    result = compare(ids[0], ids[1], tracking_uri=uri, resamples=20)
    assert result["a"].startswith(f"mlflow run {ids[0]}")
    assert {t["method"] for t in result["tasks"].values()} == {PAIRED}
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(FileNotFoundError, match="no MLflow tracking URI"):
        compare(ids[0], ids[1])


def test_cli_compare_unknown_run_is_a_clean_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["compare", str(tmp_path / "missing"), str(tmp_path)]) == 2
    assert "no MLflow tracking URI" in capsys.readouterr().err
