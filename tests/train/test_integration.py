"""End to end through Ray Train with 2 gloo workers, then read back what landed in MLflow."""

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines.cli import main
from pipelines.jobs.train import train
from recmtl.config import derive
from recmtl.data.fingerprint import data_fingerprint
from recmtl.train.tracking import config_hash
from tests.conftest import with_output

pytestmark = pytest.mark.ray


def _artifacts(client, run_id, path=""):
    names = []
    for a in client.list_artifacts(run_id, path):
        names += _artifacts(client, run_id, a.path) if a.is_dir else [a.path]
    return names


def test_train_on_two_ray_workers_lands_in_mlflow(smoke_cfg, ray_local, tmp_path):
    cfg = with_output(smoke_cfg, tmp_path)
    cfg = derive(cfg, {"mlflow.system_metrics_interval_s": 1.0, "evaluate.save_predictions": True})
    summary = train(cfg)

    client = MlflowClient(cfg.mlflow.tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.num_workers"] == "2"
    assert run.data.params["model.arch"] == "mmoe"
    tags = run.data.tags
    assert tags["recmtl.config_hash"] == config_hash(cfg)
    assert tags["recmtl.data_fingerprint"] == data_fingerprint(cfg.data.root)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert tags["recmtl.git_commit"].removesuffix("-dirty") == head.strip()

    history = client.get_metric_history(run.info.run_id, "train/loss_ctr")
    steps = [m.step for m in history]
    assert len(steps) >= 2 and steps == sorted(steps) and len(set(steps)) == len(steps)
    assert client.get_metric_history(run.info.run_id, "train/samples_per_s")[-1].value > 0
    assert "valid/auc_ctr" in run.data.metrics
    assert run.data.metrics["system/cpu_utilization_percentage"] >= 0  # MLflow's monitor ran
    assert any(k.startswith("diag/gate/") for k in run.data.metrics)  # expert health

    report = json.loads(Path(summary["report"]).read_text())
    mass = report["diagnostics"]["gates"]["gate"]["mass"]  # MMoE: one row per base task
    assert len(mass) == 2 and all(abs(sum(row) - 1) < 1e-6 for row in mass)
    assert 'class="plot gates"' in Path(summary["report_html"]).read_text()
    for task in ("ctr", "cvr", "ctcvr"):
        m = report["tasks"][task]
        assert run.data.metrics[f"test/auc_{task}"] == pytest.approx(m["auc"])
        assert m["oracle_auc"] is not None
    # The model learned something real, and cannot beat the truth by more than noise.
    assert 0.6 < report["tasks"]["ctr"]["auc"] < report["tasks"]["ctr"]["oracle_auc"] + 0.02
    assert report["tasks"]["cvr"]["rows"] < report["tasks"]["ctr"]["rows"]  # clicked rows only

    names = _artifacts(client, run.info.run_id)
    for expected in ("config.yaml", "report.json", "report.html", "predictions.parquet",
                     "sharding_plan.txt",
                     "export/manifest.json",
                     "export/dense.pt2", "export/embeddings.safetensors", "export/parity.json"):
        assert expected in names
    assert set(summary["parity_max_abs_diff"]) == {"torch", "onnx"}
    assert all(max(d.values()) <= 1e-5 for d in summary["parity_max_abs_diff"].values())

    # The standalone CLI re-scores the same checkpoint to the same report.
    out = tmp_path / "eval"
    assert main(["evaluate", "configs/smoke.yaml", f"data.root={cfg.data.root}",
                 "--checkpoint", summary["checkpoint"], "--out", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    for task, m in report["tasks"].items():
        assert again["tasks"][task]["auc"] == pytest.approx(m["auc"], abs=1e-12)
