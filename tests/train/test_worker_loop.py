"""The worker loop is a plain function: run it in this process as a 1-rank gloo job (as torchrun
would) for every architecture, and check it trains and writes a restorable checkpoint."""

from itertools import islice

import mlflow
import pytest
import torch
import torch.distributed as dist

from recmtl.config import ARCHITECTURES, derive
from recmtl.models.builder import build_model
from recmtl.train.checkpoint import load_unsharded
from recmtl.train.job import Tracking, WorkerJob
from recmtl.train.worker import run_worker
from tests.objectives import OBJECTIVES


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _train_logged(cfg, tmp_path):
    """Runs the worker loop into a fresh sqlite MLflow run; returns the client and run id."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("w")).info.run_id
    run_worker(WorkerJob(cfg, tracking=Tracking(uri, run_id),
                         checkpoint_root=str(tmp_path / "ckpt")))
    return client, run_id


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_worker_loop_trains_each_architecture(arch, smoke_cfg, tmp_path, one_rank_group):
    cfg = derive(smoke_cfg, {"model.arch": arch, "train.max_steps_per_epoch": 8,
                            "train.log_every": 4})
    client, run_id = _train_logged(cfg, tmp_path)
    losses = [m.value for m in client.get_metric_history(run_id, "train/loss_ctr")]
    assert [m.step for m in client.get_metric_history(run_id, "train/loss_ctr")] == [4, 8]
    assert all(0 < v < 5 for v in losses)
    logged = client.get_run(run_id).data.metrics
    assert 0 < logged["train/auc-ctr/window_auc"] < 1  # torchrec.metrics, every log step
    assert [m.step for m in client.get_metric_history(run_id, "train/ne-ctcvr/lifetime_ne")] == [4, 8]
    diag = {k: v for k, v in logged.items() if k.startswith("diag/")}
    masses = [v for k, v in diag.items() if "/mass_e" in k]
    assert masses and all(0 <= v <= 1 for v in masses) or arch in (
        "shared_bottom", "multitab", "infnet")
    aux = client.get_metric_history(run_id, "train/aux_loss")  # the load balance, 1 if uniform
    assert [m.step for m in aux] == ([4, 8] if arch == "sparse_moe" else [])
    assert all(0 < m.value < cfg.model.num_experts for m in aux)
    restored = load_unsharded(cfg, tmp_path / "ckpt" / "epoch-0000")
    assert type(restored.dense_ranker.backbone).__name__.lower().replace("_", "").endswith(
        arch.replace("_", ""))  # TaskSparseMoE for sparse_moe
    # Training moved both the backbone and the (fused-optimizer) embedding tables.
    fresh = dict(build_model(cfg).named_parameters())
    changed = [n for n, p in restored.named_parameters() if not torch.equal(p, fresh[n])]
    assert any(n.startswith("dense_ranker.backbone") for n in changed)
    assert any(n.startswith("embeddings") for n in changed)


def test_run_epoch_counts_rows_and_times_every_phase(smoke_cfg, one_rank_group):
    from recmtl.train.loop import PHASES, EpochHooks, StepPlan, run_epoch
    from recmtl.train.sharding import shard_model
    from recmtl.train.worker import train_readers

    dmp, opt, _ = shard_model(build_model(smoke_cfg, embedding_device="meta"), smoke_cfg.train,
                              torch.device("cpu"))
    reader, _ = train_readers(smoke_cfg, 0, 1)
    logged = []
    hooks = EpochHooks(log_every=3, on_log=lambda step, losses, rows: logged.append((step, rows)))
    stats = run_epoch(dmp, opt, reader.epoch(0), StepPlan(smoke_cfg.tasks, torch.device("cpu")), 7,
                      hooks, warmup_steps=2, time_phases=True)
    sizes = [b.size for b in islice(reader.epoch(0), 7)]
    assert (stats.steps, stats.rows, stats.steady_rows) == (7, sum(sizes), sum(sizes[2:]))
    assert logged == [(3, sum(sizes[:3])), (6, sum(sizes[3:6])), (7, sizes[6])]
    assert all(stats.phase_seconds[p] > 0 for p in PHASES)
    assert sum(stats.phase_seconds.values()) <= stats.seconds


@pytest.mark.parametrize("name", OBJECTIVES)
def test_worker_loop_trains_each_objective(name, smoke_cfg, tmp_path, one_rank_group):
    from recmtl.config import load_config

    cfg = load_config("configs/smoke.yaml", [f"data.root={smoke_cfg.data.root}",
                                             "train.max_steps_per_epoch=8", "train.log_every=4",
                                             *OBJECTIVES[name]])
    run_worker(WorkerJob(cfg, checkpoint_root=str(tmp_path / "ckpt")))
    restored = load_unsharded(cfg, tmp_path / "ckpt" / "epoch-0000")
    fresh = dict(build_model(cfg).named_parameters())
    changed = {n for n, p in restored.named_parameters() if not torch.equal(p, fresh[n])}
    assert any(n.startswith("dense_ranker.backbone") for n in changed)
    if cfg.loss.weighting == "uncertainty":
        assert "loss_log_vars" in changed
    for aux in restored.dense_ranker.aux_heads:
        assert f"dense_ranker.aux_heads.{aux}.weight" in changed
    if cfg.model.transfer == "aitm":
        assert any(n.startswith("dense_ranker.transfer") for n in changed)


def test_learning_rate_schedules_reach_the_optimizers(smoke_cfg, tmp_path, one_rank_group):
    from recmtl.config import load_config

    cfg = load_config("configs/smoke.yaml", [
        f"data.root={smoke_cfg.data.root}", "train.max_steps_per_epoch=8", "train.log_every=4",
        "train.dense_schedule={warmup_steps: 8}",
        "train.sparse_schedule={decay: linear, final_factor: 0.5}"])
    client, run_id = _train_logged(cfg, tmp_path)
    dense = [m.value for m in client.get_metric_history(run_id, "train/lr_dense")]
    sparse = [m.value for m in client.get_metric_history(run_id, "train/lr_sparse")]
    # logged after steps 4 and 8: the rates of step index 3 and 7 of 8
    assert dense == pytest.approx([cfg.train.dense_lr * 4 / 8, cfg.train.dense_lr])
    assert sparse == pytest.approx([cfg.train.sparse_lr * (1 - 0.5 * 3 / 7),
                                    cfg.train.sparse_lr * 0.5], rel=1e-6)
