"""The periodic numeric encoding trains through the worker loop and restores from a checkpoint."""

import mlflow
import pytest
import torch
import torch.distributed as dist

from recmtl.models.builder import build_model
from recmtl.train.checkpoint import load_unsharded
from recmtl.train.job import Tracking, WorkerJob
from recmtl.train.worker import run_worker


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_periodic_encoding_trains_and_restores(smoke_cfg, tmp_path, one_rank_group):
    cfg = smoke_cfg.derive({"model.numeric_encoding": "periodic", "model.numeric_dim": 4,
                            "model.numeric_frequencies": 6, "train.max_steps_per_epoch": 8,
                            "train.log_every": 4})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("w")).info.run_id
    run_worker(WorkerJob(cfg, tracking=Tracking(uri, run_id), checkpoint_root=str(tmp_path / "ckpt")))
    losses = [m.value for m in client.get_metric_history(run_id, "train/loss_ctr")]
    assert len(losses) == 2 and all(0 < v < 5 for v in losses)
    restored = load_unsharded(cfg, tmp_path / "ckpt" / "epoch-0000")
    fresh = dict(build_model(cfg).named_parameters())
    changed = {n for n, p in restored.named_parameters() if not torch.equal(p, fresh[n])}
    # The frequencies and the per-feature linear layer are trained like any dense weight.
    for name in ("frequencies", "linear.weight", "linear.bias"):
        assert f"dense_ranker.dense_encoder.{name}" in changed, name
