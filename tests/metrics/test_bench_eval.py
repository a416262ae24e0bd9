"""pipelines/bench/eval.py: the evaluation set it builds is the one its docstring describes,
the report built from it agrees with sklearn, and main() prints and writes every part."""

import json
import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.bench.eval import TASKS, eval_columns, main
from recmtl.metrics.report import build_report


def _sklearn_aucs(cols):
    """AUC per task in its own sample space: CVR on clicked rows, CTR and CTCVR on all rows."""
    clicked = cols["click"] > 0.5
    return {"ctr": roc_auc_score(cols["click"], cols["pred/ctr"]),
            "cvr": roc_auc_score(cols["conversion"][clicked], cols["pred/cvr"][clicked]),
            "ctcvr": roc_auc_score(cols["conversion"], cols["pred/ctcvr"])}


def test_eval_set_has_the_documented_base_rates_and_sample_spaces():
    cols = eval_columns(200_000, seed=1)
    assert all(len(v) == 200_000 and v.dtype == np.float64 for v in cols.values())
    assert set(np.unique(cols["click"])) == {0.0, 1.0}
    assert np.all(cols["conversion"] <= cols["click"])  # conversions only on clicks
    assert cols["click"].mean() == pytest.approx(0.11, abs=0.01)  # CTR ~11%
    clicked = cols["click"] > 0.5
    assert cols["conversion"][clicked].mean() == pytest.approx(0.22, abs=0.015)  # CVR ~22%
    # the labels follow the oracles: the observed rate per oracle decile tracks its mean
    for label, oracle, rows in (("click", "p_click", slice(None)), ("conversion", "p_cvr", clicked)):
        y, p = cols[label][rows], cols[oracle][rows]
        order = np.argsort(p)
        for part in np.array_split(order, 10):
            assert y[part].mean() == pytest.approx(p[part].mean(), abs=0.02)
    # model outputs went through float32; ctcvr is their float32 product, as served
    for name in ("ctr", "cvr"):
        p = cols[f"pred/{name}"]
        assert np.array_equal(p, p.astype(np.float32).astype(np.float64))
    want = (cols["pred/ctr"].astype(np.float32) * cols["pred/cvr"].astype(np.float32))
    np.testing.assert_array_equal(cols["pred/ctcvr"], want.astype(np.float64))
    # about 10 rows per group, integer ids stored as floats
    assert np.array_equal(cols["group"], np.round(cols["group"]))
    assert len(np.unique(cols["group"])) == pytest.approx(20_000, rel=0.02)


def test_report_on_the_eval_set_matches_sklearn():
    cols = eval_columns(50_000, seed=2)
    report = build_report(TASKS, cols, bootstrap=0)
    want = _sklearn_aucs(cols)
    assert list(report["tasks"]) == ["ctr", "cvr", "ctcvr"]
    for name, auc in want.items():
        assert report["tasks"][name]["auc"] == pytest.approx(auc, abs=1e-12)
    assert report["tasks"]["cvr"]["rows"] == int(cols["click"].sum())
    oracle = cols["p_click"] * cols["p_cvr"]  # ctcvr's oracle is composed from its parts'
    assert report["tasks"]["ctcvr"]["oracle_auc"] == pytest.approx(
        roc_auc_score(cols["conversion"], oracle), abs=1e-12)
    for name in want:  # noisy predictions rank worse than the oracle they were drawn around
        assert report["tasks"][name]["auc"] < report["tasks"][name]["oracle_auc"]


def test_main_prints_and_writes_every_part(tmp_path, capsys):
    out = tmp_path / "timings.json"
    assert main(["--rows", "20000", "--bootstrap", "20", "--slice-values", "5",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["bench"] == "eval" and written["command"].endswith(f"--json {out}")
    results = written["results"]
    # the table: a header, a rule, then "part  seconds" rows, the last one the total
    parts = dict(re.findall(r"^(\w+)\s+([0-9.]+)$", printed, re.MULTILINE))
    assert parts.pop("total") == f"{results['total_s']:.2f}"
    assert set(parts) == {"rank", "auc", "oracle_auc", "gauc", "logloss", "ece", "bootstrap",
                          "curves", "slices"}
    assert {k.removesuffix("_s") for k in results if k.endswith("_s")} == set(parts) | {"total"}
    for part, seconds in parts.items():
        assert results[f"{part}_s"] == pytest.approx(float(seconds), abs=0.011)
    assert sum(results[f"{p}_s"] for p in parts) <= results["total_s"] + 0.1
    assert results["rows"] == 20000 and results["bootstrap"] == 20 and results["peak_rss_mb"] > 0
    assert re.search(rf"build_report total {results['total_s']:.2f}s for 20,000 rows x 3 tasks "
                     r"\(bootstrap 20\); peak RSS [0-9,]+ MB", printed)
    # the AUC line: the same AUCs as sklearn on the same columns (seed 0), each with its interval
    aucs = dict(re.findall(r"(\w+) (\d\.\d{4}) \[\d\.\d{4}, \d\.\d{4}\]",
                           printed.split("AUC [95% interval] ")[1]))
    want = _sklearn_aucs(eval_columns(20000, seed=0))
    assert aucs == {name: f"{auc:.4f}" for name, auc in want.items()}
