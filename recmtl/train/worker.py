"""The training loop of one worker: a plain function that Ray Train launches (or torchrun).

Each worker reads its own shard of the Parquet rows, trains the torchrec-sharded model, scores
its validation shard, and at every epoch end writes its checkpoint shards and reports them.
Rank 0 alone talks to MLflow and draws the progress bar.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from recmtl.config import Config, config_from_dict
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.logs import quiet_third_party
from recmtl.losses import multitask_loss
from recmtl.metrics.auc import auc
from recmtl.models.builder import build_model
from recmtl.predict import predict
from recmtl.train.checkpoint import save_sharded
from recmtl.train.sharding import shard_model
from recmtl.train.tracking import MetricBuffer


def worker_device(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def validation_auc(cfg: Config, model: torch.nn.Module, reader: ParquetBatchReader,
                   device: torch.device) -> dict[str, float | None]:
    """AUC per task in its sample space over all ranks' validation shards (collective)."""
    local = predict(model, reader.epoch(0), cfg.tasks, device)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    cols = {k: np.concatenate([g[k] for g in gathered]) for k in local}
    out: dict[str, float | None] = {}
    for t in cfg.tasks:
        keep = cols[t.space] > 0.5 if t.space else slice(None)
        out[t.name] = auc(cols[t.label][keep], cols[f"pred/{t.name}"][keep])
    return out


def train_worker(loop_config: dict[str, Any]) -> None:
    quiet_third_party()
    cfg = config_from_dict(loop_config["config"])
    rank, world = dist.get_rank(), dist.get_world_size()
    device = worker_device(cfg)
    model = build_model(cfg, embedding_device="meta")
    dmp, optimizer, plan = shard_model(model, cfg.train, device)
    tracker = None
    if rank == 0:
        tracker = MetricBuffer(loop_config["tracking_uri"], loop_config["run_id"])
        tracker.client.log_text(loop_config["run_id"], str(plan), "sharding_plan.txt")

    schema = FeatureSchema.from_config(cfg)
    root = cfg.data.root.rstrip("/")
    per_rank = -(-cfg.data.batch_size // world)
    train_reader = ParquetBatchReader(f"{root}/train", schema, per_rank, rank, world,
                                      shuffle=cfg.data.shuffle, seed=cfg.seed)
    valid_reader = ParquetBatchReader(f"{root}/valid", schema, cfg.data.eval_batch_size, rank,
                                      world)
    steps = train_reader.num_batches
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    task_names = [t.name for t in cfg.tasks]
    global_step = 0
    rows_trained = 0
    for epoch in range(cfg.train.epochs):
        dmp.train()
        bar = tqdm(total=steps, desc=f"epoch {epoch}", disable=rank != 0, mininterval=5.0,
                   unit="step", dynamic_ncols=False, ncols=100)
        window_losses: list[torch.Tensor] = []
        window_rows, window_start = 0, time.perf_counter()
        for step, batch in enumerate(train_reader.epoch(epoch)):
            if step >= steps:
                break
            batch = batch.to(device, non_blocking=True)
            logits = dmp(batch.dense, batch.sparse)
            loss, per_task = multitask_loss(logits, batch.labels, cfg.tasks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            global_step += 1
            rows_trained += batch.size
            window_rows += batch.size * world
            window_losses.append(torch.stack([per_task[n] for n in task_names]))
            bar.update(1)
            if global_step % cfg.train.log_every == 0 or step == steps - 1:
                # One host sync per logging window, not per step.
                mean = torch.stack(window_losses).mean(0).tolist()
                rate = window_rows / (time.perf_counter() - window_start)
                metrics = {f"train/loss_{n}": v for n, v in zip(task_names, mean, strict=True)}
                metrics["train/samples_per_s"] = rate
                bar.set_postfix(samples_s=f"{rate:,.0f}", loss=f"{sum(mean):.4f}")
                if tracker:
                    tracker.add(metrics, global_step)
                    tracker.flush()
                window_losses, window_rows, window_start = [], 0, time.perf_counter()
        bar.close()
        total_rows = torch.tensor([rows_trained], dtype=torch.int64, device=device)
        dist.all_reduce(total_rows)
        val = validation_auc(cfg, dmp, valid_reader, device)
        metrics = {f"valid/auc_{k}": v for k, v in val.items() if v is not None}
        if tracker:
            tracker.add(metrics | {"epoch": epoch}, global_step)
            tracker.flush()
            print(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
                  flush=True)
        _report(metrics | {"epoch": epoch, "step": global_step,
                           "rows_trained": int(total_rows)}, dmp, optimizer, epoch, loop_config)


def _report(metrics: dict[str, Any], model: torch.nn.Module, optimizer: object, epoch: int,
            loop_config: dict[str, Any]) -> None:
    """Writes this rank's checkpoint shards and hands them to Ray Train (or to a local dir)."""
    local_root = loop_config.get("checkpoint_root")
    if local_root:  # torchrun: every rank writes into one shared directory
        path = Path(local_root) / f"epoch-{epoch:04d}"
        save_sharded(path, model, optimizer)
        return
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        save_sharded(tmp, model, optimizer)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"epoch-{epoch:04d}")
