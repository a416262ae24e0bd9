"""Post-hoc calibration through the jobs: fit on the valid split, report on the test split.

References are independent: sklearn's IsotonicRegression fit on valid logits collected here,
sklearn's metrics on the test rows, and the labels' own rates.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import log_loss, roc_auc_score

from pipelines.jobs.calibrate import fit_calibration
from pipelines.jobs.evaluate import evaluate
from recmtl.config import ConfigError, TaskConfig, derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.metrics.calibrate import fit_task_calibrators
from recmtl.predict import predict
from tests.calibration_model import miscalibrated_checkpoint

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def trained(smoke_cfg, tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration_job")
    model = miscalibrated_checkpoint(smoke_cfg, root / "checkpoint")
    return model, root


def _logits(cfg, model, split):
    reader = ParquetBatchReader(f"{cfg.data.root}/{split}", FeatureSchema.from_config(cfg), 4096)
    return predict(model, reader.epoch(0), cfg.tasks, logits=True)


@pytest.fixture(scope="module")
def isotonic_run(smoke_cfg, trained):
    """``recmtl evaluate`` of the checkpoint with every isotonic knot kept (sklearn's curve)."""
    _, root = trained
    cfg = derive(smoke_cfg, {"evaluate.calibration": "isotonic", "evaluate.bootstrap": 0,
                            "evaluate.calibration_max_knots": None,
                            "evaluate.save_predictions": True})
    report = evaluate(cfg, root / "checkpoint", root / "isotonic")
    return cfg, report, pq.read_table(root / "isotonic" / "predictions.parquet").to_pandas()


def test_test_p_over_y_moves_to_one_and_ece_and_logloss_drop(isotonic_run):
    _, report, _ = isotonic_run
    section = report["calibration"]
    assert (section["method"], section["split"]) == ("isotonic", "valid")
    for task in ("ctr", "cvr", "ctcvr"):
        before, after = section["tasks"][task]["before"], section["tasks"][task]["after"]
        assert before["calibration"] > 1.3, (task, before)  # the shifted biases over-predict
        assert abs(after["calibration"] - 1) < 0.15, (task, after)
        assert after["ece"] < before["ece"] and after["logloss"] < before["logloss"], task
        assert after == {k: report["tasks"][task][k] for k in after if k != "reliability"} | {
            "reliability": report["tasks"][task]["curves"]["reliability"]}


def test_isotonic_equals_sklearn_fit_on_valid_applied_to_test(smoke_cfg, trained, isotonic_run):
    model, _ = trained
    cfg, report, preds = isotonic_run
    valid, test = _logits(cfg, model, "valid"), _logits(cfg, model, "test")
    want = {}
    for task, space in (("ctr", None), ("cvr", "click")):
        keep = valid[space] > 0.5 if space else slice(None)
        iso = IsotonicRegression(out_of_bounds="clip").fit(valid[f"logit/{task}"][keep],
                                                           valid[cfg.task(task).label][keep])
        want[task] = iso.predict(test[f"logit/{task}"])
    want["ctcvr"] = want["ctr"] * want["cvr"]
    for task, p in want.items():
        np.testing.assert_allclose(preds[f"pred/{task}"], p, rtol=0, atol=2e-6, err_msg=task)
    # The report's after metrics are those of these probabilities, on the test rows.
    clicked = test["click"] > 0.5
    y, p = test["conversion"][clicked], want["cvr"][clicked]
    after = report["calibration"]["tasks"]["cvr"]["after"]
    assert after["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert after["logloss"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-3)
    assert after["calibration"] == pytest.approx(p.mean() / y.mean(), rel=1e-5)


def test_monotone_maps_keep_auc_and_the_product_stays_below_its_parts(smoke_cfg, trained,
                                                                      tmp_path):
    _, root = trained
    cfg = derive(smoke_cfg, {"evaluate.calibration": "platt", "evaluate.bootstrap": 0,
                            "evaluate.save_predictions": True})
    report = evaluate(cfg, root / "checkpoint", tmp_path)
    for task in ("ctr", "cvr"):  # a strictly increasing map cannot reorder rows
        t = report["calibration"]["tasks"][task]
        assert t["after"]["auc"] == pytest.approx(t["before"]["auc"], abs=1e-9)
        assert t["fit"]["calibrator"].startswith("platt: sigmoid(")
    assert report["calibration"]["tasks"]["ctcvr"]["fit"] == {"product_of": ["ctr", "cvr"]}
    preds = pq.read_table(tmp_path / "predictions.parquet").to_pandas()
    assert (preds["pred/ctcvr"] <= preds["pred/ctr"]).all()
    assert (preds["pred/ctcvr"] <= preds["pred/cvr"]).all()


def test_report_page_shows_before_and_after(isotonic_run, trained):
    _, root = trained
    page = (root / "isotonic" / "report.html").read_text()
    report = json.loads((root / "isotonic" / "report.json").read_text())
    assert '<section id="calibration">' in page
    for task in ("ctr", "cvr", "ctcvr"):
        assert f'id="calibration-{task}"' in page
        assert f'aria-label="{task}: calibration before / after"' in page
    row = page.split('id="calibration-ctr"')[1].split("</tr>")[0]
    before = report["calibration"]["tasks"]["ctr"]["before"]["calibration"]
    assert f"{before:.4f}" in row and "isotonic:" in row


def test_fit_uses_the_valid_split_only(smoke_cfg, trained):
    model, _ = trained
    cfg = derive(smoke_cfg, {"evaluate.calibration": "temperature"})
    fitted = fit_calibration(cfg, model)
    valid = _logits(cfg, model, "valid")
    assert fitted.tasks["ctr"]["rows"] == len(valid["click"])
    assert fitted.tasks["cvr"]["rows"] == int(valid["click"].sum())  # clicked rows: its space
    assert fitted.tasks["cvr"]["positives"] == int(valid["conversion"].sum())
    assert set(fitted.calibrators.base) == {"ctr", "cvr"}
    assert fitted.calibrators.products == {"ctcvr": ["ctr", "cvr"]}
    assert fit_calibration(smoke_cfg, model) is None  # evaluate.calibration: none


def test_a_task_that_cannot_be_fit_stays_uncalibrated_and_says_why():
    tasks = (TaskConfig("ctr", "click"), TaskConfig("cvr", "conversion", space="click"))
    rng = np.random.default_rng(0)
    cols = {"logit/ctr": rng.normal(size=50), "logit/cvr": rng.normal(size=50),
            "click": (rng.random(50) < 0.5).astype(float), "conversion": np.zeros(50)}
    fitted = fit_task_calibrators(tasks, cols, "isotonic")
    assert "calibration needs both outcomes" in fitted.tasks["cvr"]["skipped"]
    assert fitted.calibrators.describe()["tasks"]["cvr"] == {"kind": "identity"}
    assert fitted.calibrators.describe()["tasks"]["ctr"]["kind"] == "isotonic"


def test_config_keys_load_with_defaults_and_overrides():
    cfg = load_config(SMOKE)
    assert (cfg.evaluate.calibration, cfg.evaluate.calibration_max_knots) == ("none", 100)
    cfg = load_config(SMOKE, ["evaluate.calibration=isotonic",
                              "evaluate.calibration_max_knots=null"])
    assert (cfg.evaluate.calibration, cfg.evaluate.calibration_max_knots) == ("isotonic", None)


@pytest.mark.parametrize("override, message", [
    ("evaluate.calibration=beta", r"key 'evaluate\.calibration': expected one of "
                                  r"\('none', 'isotonic', 'platt', 'temperature'\)"),
    ("evaluate.calibration_max_knots=1", r"evaluate\.calibration_max_knots: 1 must be >= 2"),
])
def test_bad_calibration_keys_name_the_key_and_file(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(SMOKE, [override])
    assert "smoke.yaml" in str(e.value)


def test_calibration_needs_a_binary_task():
    with pytest.raises(ConfigError, match=r"evaluate\.calibration: platt calibrates binary"):
        load_config(SMOKE, ["tasks=[{name: watch, label: log_watch_time, kind: regression}]",
                            "evaluate.calibration=platt"])
