"""The periodic numeric encoding trains through the worker loop and restores from a checkpoint."""

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist

from recmtl.config import derive
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
    cfg = derive(smoke_cfg, {"model.numeric_encoding": "periodic", "model.numeric_dim": 4,
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


def test_piecewise_linear_edges_come_from_the_train_rows(smoke_cfg, tmp_path, one_rank_group):
    cfg = derive(smoke_cfg, {"model.numeric_encoding": "piecewise_linear", "model.numeric_bins": 5,
                            "model.numeric_dim": 3, "train.max_steps_per_epoch": 4,
                            "train.log_every": 2})
    run_worker(WorkerJob(cfg, checkpoint_root=str(tmp_path / "ckpt")))
    restored = load_unsharded(cfg, tmp_path / "ckpt" / "epoch-0000").dense_ranker.dense_encoder
    # The reference: numpy quantiles of every train row's dense floats (smoke has < EDGE_ROWS).
    table = pq.read_table(f"{cfg.data.root}/train", columns=list(cfg.features.dense))
    for f, feature in enumerate(cfg.features.dense):
        column = table[feature].to_numpy(zero_copy_only=False).astype(np.float64)
        want = np.unique(np.quantile(column, np.linspace(0, 1, 6)).astype(np.float32))
        bins = len(want) - 1
        got_lower = restored.lower[f, :bins].numpy()
        got_upper = got_lower + restored.width[f, :bins].numpy()
        np.testing.assert_allclose(got_lower, want[:-1], rtol=1e-6)
        np.testing.assert_allclose(got_upper, want[1:], rtol=1e-5)
    fresh = build_model(cfg).dense_ranker.dense_encoder
    assert not torch.equal(restored.linear.weight, fresh.linear.weight)
