"""pipelines/bench/census.py without training: the tree reference on a census-format CSV (its
AUC equals sklearn's on the same fit), and the table's best-on-valid row and differences."""

import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from pipelines.bench.census import _split, gradient_boosting, table
from pipelines.feature_store.census import CATEGORICAL, NUMERIC, prepare
from tests.test_census import census_rows, write_census


def test_trees_score_the_prepared_columns(tmp_path):
    src = tmp_path / "census.csv.gz"
    write_census(src, census_rows(n=600))
    prepare(src, tmp_path / "out")
    trees = gradient_boosting(tmp_path / "out", seed=0, max_iter=10)
    x, y = _split(tmp_path / "out", "train")
    assert x.shape[1] == len(CATEGORICAL) + len(NUMERIC)
    xt, yt = _split(tmp_path / "out", "test")
    for task in ("income", "marital"):
        ref = HistGradientBoostingClassifier(
            categorical_features=[True] * len(CATEGORICAL) + [False] * len(NUMERIC),
            max_iter=10, random_state=0).fit(x, y[task])
        assert trees[task]["test"]["auc"] == pytest.approx(
            roc_auc_score(yt[task], ref.predict_proba(xt)[:, 1]), abs=1e-12)


TASKS = ("income", "marital")


def _mmoe(name, valid, test):
    return {"variant": f"census-{name}",
            "valid": {f"valid/auc_{t}": v for t, v in zip(TASKS, valid, strict=True)},
            "tasks": {t: {"auc": a, "logloss": 0.1} for t, a in zip(TASKS, test, strict=True)}}


def test_table_marks_the_best_on_valid_and_differences():
    result = {"trees": {t: {"test": {"auc": 0.95, "logloss": 0.12}} for t in ("income", "marital")},
              "mmoe": [_mmoe("none", (0.90, 0.99), (0.96, 0.99)),
                       _mmoe("periodic", (0.92, 0.99), (0.94, 0.995))],
              "best_on_valid": "census-periodic"}
    lines = table(result).splitlines()
    assert lines[4].startswith("| mmoe, numeric_encoding periodic (best on valid) |")
    assert lines[-1] == "| best mmoe - trees | -0.0100 | +0.0450 | -0.0200 | -0.0200 |"
