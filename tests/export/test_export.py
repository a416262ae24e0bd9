import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.cli import main
from recmtl.config import derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.bundle import export_bundle
from recmtl.export.mlflow_model import log_bundle_model
from recmtl.export.parity import ParityError, check_parity, kjt_to_csr
from recmtl.export.scorer import BundleError, BundleScorer
from recmtl.losses import task_probabilities
from recmtl.models.builder import build_model
from tests.objectives import OBJECTIVES

ROWS = 300


def _export(cfg, out, seed=7, **export_overrides):
    cfg = derive(cfg, {f"export.{k}": v for k, v in export_overrides.items()})
    model = build_model(cfg, seed=seed).eval()
    reader = ParquetBatchReader(f"{cfg.data.root}/test", FeatureSchema.from_config(cfg), ROWS)
    batch = next(iter(reader.epoch(0)))
    manifest = export_bundle(model, cfg, out, model.pooled(batch.sparse).detach(), batch.dense)
    return cfg, model, batch, manifest


@pytest.fixture(scope="module")
def exported(smoke_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    cfg, model, batch, manifest = _export(smoke_cfg, out, parquet_tables=True)
    return model, batch, out, manifest


def _probs(model, batch, cfg):
    with torch.no_grad():
        return task_probabilities(model(batch.dense, batch.sparse), cfg.tasks)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_bundle_matches_trained_model(exported, smoke_cfg, backend):
    model, batch, out, manifest = exported
    diffs = check_parity(model, BundleScorer(out, backend), batch, smoke_cfg.tasks, atol=1e-5)
    assert set(diffs) == {"ctr", "cvr", "ctcvr"}
    assert [t["name"] for t in manifest["tasks"]] == ["ctr", "cvr", "ctcvr"]
    assert manifest["tasks"][2]["meaning"] == "P(conversion=1) = ctr x cvr"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("rows", [1, 7])
def test_dynamic_batch(exported, smoke_cfg, rows, backend):
    model, batch, out, _ = exported
    csr = {k: (v[: o[rows]], o[: rows + 1]) for k, (v, o) in kjt_to_csr(batch).items()}
    got = BundleScorer(out, backend).score(csr, batch.dense[:rows])
    want = _probs(model, batch, smoke_cfg)
    for task in want:
        torch.testing.assert_close(got[task], want[task][:rows], rtol=0, atol=1e-5)


def test_parquet_tables_hold_the_same_vectors(exported):
    _, _, out, manifest = exported
    scorer = BundleScorer(out)
    for table in manifest["tables"]:
        t = pq.read_table(out / "tables" / f"{table['name']}.parquet")
        assert t["id"].to_pylist() == list(range(table["num_embeddings"]))
        vectors = np.asarray(t["vector"].to_pylist(), dtype=np.float32)
        np.testing.assert_array_equal(vectors, scorer.tables[table["name"]].numpy())


def test_parity_fails_loudly_on_a_different_model(exported, smoke_cfg):
    _, batch, out, _ = exported
    other = build_model(smoke_cfg, seed=8).eval()
    with pytest.raises(ParityError, match="differs from the trained model"):
        check_parity(other, BundleScorer(out), batch, smoke_cfg.tasks, atol=1e-5)


def test_checksum_mismatch_and_missing_file(exported, tmp_path):
    _, _, out, manifest = exported
    bad = dict(manifest, files=dict(manifest["files"], **{"dense.pt2": "0" * 64}))
    for name in manifest["files"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes((out / name).read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match="dense.pt2: sha256 .* does not match"):
        BundleScorer(tmp_path)
    (tmp_path / "dense.onnx").unlink()
    with pytest.raises(BundleError, match="missing dense.onnx"):
        BundleScorer(tmp_path)


def test_missing_feature_is_an_error(exported):
    _, batch, out, _ = exported
    csr = kjt_to_csr(batch)
    del csr["slot"]
    with pytest.raises(BundleError, match="lacks sparse feature 'slot'"):
        BundleScorer(out).score(csr, batch.dense)


def test_raw_rows_score_like_the_model(exported, smoke_cfg):
    model, batch, out, _ = exported
    rows = ds.dataset(f"{smoke_cfg.data.root}/test", format="parquet").head(ROWS)
    got = BundleScorer(out).score_rows(rows)
    want = _probs(model, batch, smoke_cfg)  # the reader's first batch = the same rows
    for task in want:
        torch.testing.assert_close(got[task], want[task], rtol=0, atol=1e-5)


@pytest.mark.parametrize("column, value, message", [
    ("item_id", 10**9, r"column 'item_id' has 1 id\(s\) outside \[0, 1000\) \(first: 1000000000\)"),
    ("price", float("nan"), "column 'price' has NaN"),
])
def test_raw_row_errors(exported, smoke_cfg, column, value, message):
    _, _, out, _ = exported
    good = ds.dataset(f"{smoke_cfg.data.root}/test", format="parquet").head(5)
    values = good.column(column).to_pylist()
    values[3] = value
    bad = good.set_column(good.schema.get_field_index(column), column,
                          pa.array(values, good.schema.field(column).type))
    with pytest.raises(BundleError, match=message):
        BundleScorer(out).score_rows(bad)
    with pytest.raises(BundleError, match=f"lacks .* feature '{column}'"):
        BundleScorer(out).score_rows(good.drop_columns([column]))


def test_score_cli_writes_scores_beside_kept_columns(exported, smoke_cfg, tmp_path):
    model, batch, out, _ = exported
    test_dir = f"{smoke_cfg.data.root}/test"
    assert main(["score", "--bundle", str(out), "--data", test_dir, "--out",
                 str(tmp_path / "s.parquet"), "--backend", "onnx", "--keep", "impression_id"]) == 0
    scored = pq.read_table(tmp_path / "s.parquet")
    truth = ds.dataset(test_dir, format="parquet").to_table(columns=["impression_id"])
    assert scored["impression_id"].to_pylist() == truth["impression_id"].to_pylist()
    want = _probs(model, batch, smoke_cfg)["ctcvr"].numpy()
    np.testing.assert_allclose(scored["score_ctcvr"].to_numpy()[:ROWS], want, rtol=0, atol=1e-5)


def test_subset_of_towers(smoke_cfg, tmp_path):
    cfg, model, batch, manifest = _export(smoke_cfg, tmp_path, tasks=("ctcvr",))
    assert manifest["outputs"] == ["ctcvr"]
    for backend in ("torch", "onnx"):
        diffs = check_parity(model, BundleScorer(tmp_path, backend), batch, cfg.tasks, atol=1e-5)
        assert list(diffs) == ["ctcvr"]


@pytest.mark.heavy  # 12 s of AOT compilation; an optional backend (export.aot_inductor)
def test_aot_inductor_backend(smoke_cfg, tmp_path):
    cfg, model, batch, _ = _export(smoke_cfg, tmp_path, aot_inductor=True, onnx=False)
    assert check_parity(model, BundleScorer(tmp_path, "aoti"), batch, cfg.tasks, atol=1e-5)
    with pytest.raises(BundleError, match="no dense.onnx for backend 'onnx'"):
        BundleScorer(tmp_path, "onnx")


# Every architecture exports with parity on both backends from its example config, trained:
# tests/models/test_registry.py.


def test_sparse_moe_capacity_and_shared_router_export_with_parity(smoke_cfg, tmp_path):
    # Capacity drops depend on the batch: the exported graph keeps the bound symbolic in B.
    cfg = derive(smoke_cfg, {"model.arch": "sparse_moe", "model.moe_capacity_factor": 0.8,
                            "model.moe_shared_router": True})
    cfg, model, batch, _ = _export(cfg, tmp_path, seed=4)
    for backend in ("torch", "onnx"):
        diffs = check_parity(model, BundleScorer(tmp_path, backend), batch, cfg.tasks, atol=1e-5)
        assert max(diffs.values()) <= 1e-5


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_exports_with_parity(name, smoke_cfg, tmp_path):
    cfg = load_config("configs/smoke.yaml", [f"data.root={smoke_cfg.data.root}", *OBJECTIVES[name]])
    cfg, model, batch, manifest = _export(cfg, tmp_path, seed=5)
    assert [t["name"] for t in manifest["tasks"]] == [t.name for t in cfg.tasks]
    for backend in ("torch", "onnx"):
        scorer = BundleScorer(tmp_path, backend)
        diffs = check_parity(model, scorer, batch, cfg.tasks, atol=1e-5)
        assert set(diffs) == {t.name for t in cfg.tasks} and max(diffs.values()) <= 1e-5


def test_mlflow_model_logs_with_signature_and_registers(exported, smoke_cfg, tmp_path):
    _, _, out, _ = exported
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("bundle", artifact_location=(tmp_path / "a").as_uri())
    rows = ds.dataset(f"{smoke_cfg.data.root}/test", format="parquet").head(50)
    with mlflow.start_run(experiment_id=experiment):
        uri, version = log_bundle_model(out, rows, registered_model_name="recmtl-smoke")
    model = mlflow.pyfunc.load_model(uri)
    assert "recent_categories" in model.metadata.get_input_schema().input_names()
    got = model.predict(rows.to_pandas())
    want = BundleScorer(out).score_rows(rows)
    for task, scores in want.items():
        np.testing.assert_allclose(got[f"score_{task}"].to_numpy(), scores.numpy(), rtol=0,
                                   atol=1e-6)
    versions = mlflow.MlflowClient().search_model_versions("name='recmtl-smoke'")
    assert [int(v.version) for v in versions] == [1] and version == "1"
    # the environment a server rebuilds: what scoring imports, at the versions that logged it
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    assert f"pyarrow=={pa.__version__}" in requirements
    assert any(r.startswith("safetensors==") for r in requirements)


def test_scorer_and_modules_stay_free_of_heavy_imports():
    code = ("import sys, recmtl.export.scorer, recmtl.modules.mmoe; "
            "bad = [m for m in ('torchrec', 'ray', 'mlflow') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
