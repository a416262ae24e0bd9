"""A bundle with post-hoc calibrators: every backend serves the calibrated model, composed
tasks stay below their parts, the manifest describes each calibrator, evaluation from the
bundle scores the calibrated probabilities."""

import json

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from pipelines.jobs.evaluate import evaluate
from pipelines.jobs.export import export
from recmtl.config import derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.bundle import export_bundle
from recmtl.export.parity import ParityError, check_parity, kjt_to_csr
from recmtl.export.scorer import BundleScorer
from recmtl.losses import task_probabilities
from recmtl.metrics.calibrate import fit_task_calibrators
from recmtl.models.builder import build_model
from recmtl.modules.calibration import PlattCalibrator, TaskCalibrators
from recmtl.predict import predict
from tests.calibration_model import miscalibrated_checkpoint
from tests.objectives import OBJECTIVES

ROWS = 500  # the reader splits 6,000 test rows into equal batches: 500 each


@pytest.fixture(scope="module")
def checkpoint(smoke_cfg, tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrated_bundle")
    model = miscalibrated_checkpoint(smoke_cfg, root / "checkpoint")
    return model, root


@pytest.fixture(scope="module", params=["isotonic", "platt"])
def bundle(request, smoke_cfg, checkpoint):
    """``recmtl export`` of the checkpoint: calibrators fit on valid, parity checked."""
    model, root = checkpoint
    cfg = derive(smoke_cfg, {"evaluate.calibration": request.param,
                            "export.parity_rows": ROWS})
    out = root / f"export-{request.param}"
    result = export(cfg, root / "checkpoint", out)
    return cfg, model, out, result


def _first_batch(cfg, rows=ROWS):
    reader = ParquetBatchReader(f"{cfg.data.root}/test", FeatureSchema.from_config(cfg), rows)
    return next(iter(reader.epoch(0)))


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_every_backend_serves_the_calibrated_model(bundle, backend):
    cfg, model, out, result = bundle
    manifest = result["manifest"]
    calibrators = TaskCalibrators.from_description(manifest["calibration"]["calibrators"])
    batch = _first_batch(cfg)
    diffs = check_parity(model, BundleScorer(out, backend), batch, cfg.tasks,
                         cfg.export.parity_atol, calibrators)
    assert set(diffs) == {"ctr", "cvr", "ctcvr"}
    assert result["parity"]["calibration"] == cfg.evaluate.calibration
    # Not the uncalibrated model: its probabilities are far from what the bundle serves.
    with pytest.raises(ParityError, match="differs from the trained model"):
        check_parity(model, BundleScorer(out, backend), batch, cfg.tasks, cfg.export.parity_atol)
    # Nor another calibration: the logit slack of the check does not stretch that far.
    wrong = TaskCalibrators({"ctr": PlattCalibrator(1.0, -2.0), "cvr": None},
                            {"ctcvr": ["ctr", "cvr"]})
    with pytest.raises(ParityError, match="also miss their range over logits"):
        check_parity(model, BundleScorer(out, backend), batch, cfg.tasks, cfg.export.parity_atol,
                     wrong)
    # The reference by hand: the manifest's calibrators on the model's own logits.
    with torch.no_grad():
        logits = model(batch.dense, batch.sparse)
        probs = calibrators({k: logits[k] for k in ("ctr", "cvr")})
    got = BundleScorer(out, backend).score_rows(
        ds.dataset(f"{cfg.data.root}/test", format="parquet").head(ROWS))
    for task in ("ctr", "cvr", "ctcvr"):
        gap = (got[task] - probs[task]).abs()
        # Exact but for rows on a near-vertical isotonic segment, where ONNX's logit ulps show.
        assert float(gap.median()) <= 1e-6 and float(gap.max()) <= 1e-3, task


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_calibrated_ctcvr_never_exceeds_ctr_or_cvr(bundle, backend):
    cfg, _, out, _ = bundle
    got = BundleScorer(out, backend).score_rows(
        ds.dataset(f"{cfg.data.root}/test", format="parquet").to_table())
    assert len(got["ctr"]) == 6000
    assert bool((got["ctcvr"] <= got["ctr"]).all()) and bool((got["ctcvr"] <= got["cvr"]).all())
    assert float(got["ctr"].max()) <= 1.0 and float(got["ctcvr"].min()) >= 0.0


def test_manifest_describes_each_calibrator(bundle):
    cfg, _, out, result = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result["manifest"]
    cal = manifest["calibration"]
    method = cfg.evaluate.calibration
    assert (cal["method"], cal["split"]) == (method, "valid")
    assert {cal["calibrators"]["tasks"][t]["kind"] for t in ("ctr", "cvr")} == {method}
    assert cal["calibrators"]["products"] == {"ctcvr": ["ctr", "cvr"]}
    assert cal["fit"]["cvr"]["rows"] == 633  # the valid split's clicked rows
    if method == "isotonic":
        assert 2 <= len(cal["calibrators"]["tasks"]["ctr"]["x_knots"]) <= cfg.evaluate.calibration_max_knots
    assert manifest["outputs"] == ["ctr", "cvr", "ctcvr"]


def test_evaluating_the_bundle_equals_evaluating_the_calibrated_checkpoint(bundle, tmp_path):
    cfg, _, out, _ = bundle
    cfg = derive(cfg, {"evaluate.bootstrap": 0})
    ckpt = evaluate(cfg, out.parent / "checkpoint", tmp_path / "ckpt")
    served = evaluate(cfg, None, tmp_path / "bundle", bundle=out)
    assert "calibration" in ckpt and "calibration" not in served
    for task, want in ckpt["tasks"].items():
        for key in ("auc", "logloss", "ece", "calibration"):
            assert served["tasks"][task][key] == pytest.approx(want[key], abs=1e-6), (task, key)


def test_export_bundle_refuses_a_calibration_the_config_does_not_ask_for(smoke_cfg, tmp_path):
    cfg = derive(smoke_cfg, {"evaluate.calibration": "isotonic"})
    model = build_model(cfg, seed=1).eval()
    batch = _first_batch(cfg, 64)
    with pytest.raises(ValueError, match="evaluate.calibration is 'isotonic' but the "
                                         "calibration passed is None"):
        export_bundle(model, cfg, tmp_path, model.pooled(batch.sparse).detach(), batch.dense)


@pytest.mark.parametrize("name", ["aitm", "escm2_dr", "watch_uncertainty"])
def test_objectives_export_calibrated_with_parity(name, smoke_cfg, tmp_path):
    """AITM calibrates ctcvr as a base task; ESCM2-DR has an auxiliary output; a regression
    task passes through untouched."""
    cfg = load_config("configs/smoke.yaml", [f"data.root={smoke_cfg.data.root}",
                                             *OBJECTIVES[name], "evaluate.calibration=platt"])
    model = build_model(cfg, seed=5).eval()
    batch = _first_batch(cfg)
    cols = predict(model, [batch], cfg.tasks, logits=True)
    fitted = fit_task_calibrators(cfg.tasks, cols, "platt")
    export_bundle(model, cfg, tmp_path, model.pooled(batch.sparse).detach(), batch.dense, fitted)
    with torch.no_grad():
        raw = task_probabilities(model(batch.dense, batch.sparse), cfg.tasks)
    for backend in ("torch", "onnx"):
        scorer = BundleScorer(tmp_path, backend)
        diffs = check_parity(model, scorer, batch, cfg.tasks, 1e-5, fitted.calibrators)
        assert set(diffs) == {t.name for t in cfg.tasks}
        got = scorer.score(*_csr_and_dense(batch))
        for t in cfg.tasks:
            same = torch.allclose(got[t.name], raw[t.name], rtol=0, atol=1e-5)
            assert same == (t.kind == "regression"), t.name


def _csr_and_dense(batch):
    return kjt_to_csr(batch), batch.dense


def test_platt_on_the_logits_is_what_the_bundle_computes(bundle):
    cfg, model, out, result = bundle
    if cfg.evaluate.calibration != "platt":
        pytest.skip("the closed form is Platt's")
    tasks = result["manifest"]["calibration"]["calibrators"]["tasks"]
    batch = _first_batch(cfg)
    with torch.no_grad():
        logits = {k: v.double().numpy() for k, v in model(batch.dense, batch.sparse).items()}
    p = {t: 1 / (1 + np.exp(-(tasks[t]["a"] * logits[t] + tasks[t]["b"]))) for t in ("ctr", "cvr")}
    got = BundleScorer(out).score(*_csr_and_dense(batch))
    np.testing.assert_allclose(got["ctr"].numpy(), p["ctr"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["ctcvr"].numpy(), p["ctr"] * p["cvr"], rtol=0, atol=1e-6)
