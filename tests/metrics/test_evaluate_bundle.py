"""`recmtl evaluate` from a checkpoint and from its serving bundle, with slices and predictions."""

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch.distributed.checkpoint as dcp
from sklearn.metrics import roc_auc_score

from pipelines.cli import main
from pipelines.jobs.evaluate import evaluate
from recmtl.config import derive
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.errors import DataError
from recmtl.export.bundle import export_bundle
from recmtl.models.builder import build_model

SLICE = "user_segment"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def model_and_bundle(smoke_cfg, tmp_path_factory):
    """An untrained model saved as a checkpoint and exported as a bundle (as tests/export does:
    one reader batch as the example input; no ONNX, to stay fast)."""
    root = tmp_path_factory.mktemp("eval_bundle")
    cfg = derive(smoke_cfg, {"export.onnx": False, "evaluate.slices": [SLICE],
                            "evaluate.save_predictions": True, "evaluate.bootstrap": 50})
    model = build_model(cfg, seed=7).eval()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(root / "checkpoint"), no_dist=True)
    reader = ParquetBatchReader(f"{cfg.data.root}/test", FeatureSchema.from_config(cfg), 256)
    batch = next(iter(reader.epoch(0)))
    export_bundle(model, cfg, root / "bundle", model.pooled(batch.sparse).detach(), batch.dense)
    return cfg, root


@pytest.fixture(scope="module")
def reports(model_and_bundle):
    cfg, root = model_and_bundle
    from_checkpoint = evaluate(cfg, root / "checkpoint", root / "eval_ckpt")
    from_bundle = evaluate(cfg, None, root / "eval_bundle", bundle=root / "bundle")
    return from_checkpoint, from_bundle


def test_bundle_report_equals_checkpoint_report(reports):
    ckpt, bundle = reports
    assert bundle["bundle"] and ckpt["checkpoint"]
    assert set(ckpt["tasks"]) == set(bundle["tasks"]) == {"ctr", "cvr", "ctcvr"}
    for name, want in ckpt["tasks"].items():
        got = bundle["tasks"][name]
        assert (got["rows"], got["positives"]) == (want["rows"], want["positives"])
        for key in ("auc", "oracle_auc", "gauc", "logloss", "ece"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (name, key)
        for a, b in zip(got["slices"][SLICE], want["slices"][SLICE], strict=True):
            assert (a["value"], a["rows"], a["positives"]) == (b["value"], b["rows"], b["positives"])
            assert a["auc"] == pytest.approx(b["auc"], abs=1e-6)


def test_slices_match_sklearn_on_the_test_rows(model_and_bundle, reports):
    cfg, root = model_and_bundle
    ckpt, _ = reports
    rows = ds.dataset(f"{cfg.data.root}/test", format="parquet").to_table().to_pandas()
    preds = pq.read_table(root / "eval_ckpt" / "predictions.parquet").to_pandas()
    assert len(preds) == len(rows)
    np.testing.assert_array_equal(preds["click"], rows["click"])  # data order, row for row
    clicked = rows["click"] == 1
    for entry in ckpt["tasks"]["cvr"]["slices"][SLICE]:
        rows_in = clicked & (rows[SLICE] == entry["value"])
        assert entry["rows"] == rows_in.sum()
        y, p = rows.loc[rows_in, "conversion"], preds.loc[rows_in, "pred/cvr"]
        want = roc_auc_score(y, p) if y.nunique() == 2 else None
        assert entry["auc"] == pytest.approx(want, abs=1e-9)
    assert sum(e["rows"] for e in ckpt["tasks"]["ctr"]["slices"][SLICE]) == len(rows)


def test_report_files_and_html_slice_table(model_and_bundle):
    _, root = model_and_bundle
    report = json.loads((root / "eval_bundle" / "report.json").read_text())
    page = (root / "eval_bundle" / "report.html").read_text()
    for name in report["tasks"]:
        assert f'id="slices-{name}-{SLICE}"' in page


def test_missing_slice_column_names_file_and_column(model_and_bundle, tmp_path):
    cfg, root = model_and_bundle
    cfg = derive(cfg, {"evaluate.slices": ["nope"]})
    with pytest.raises(DataError, match=r"part-00000\.parquet: column 'nope' is missing"):
        evaluate(cfg, root / "checkpoint", tmp_path)


def test_cli_slice_and_bundle_flags(model_and_bundle, tmp_path):
    cfg, root = model_and_bundle
    code = main(["evaluate", str(CONFIGS / "smoke.yaml"), f"data.root={cfg.data.root}",
                 "evaluate.bootstrap=0", "--bundle", str(root / "bundle"), "--slice", "device",
                 "--slice", "slot", "--out", str(tmp_path / "out")])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["tasks"]["ctr"]["slices"]) == {"device", "slot"}
    assert report["tasks"]["ctr"]["auc_ci95"] is None
