"""The training loop of one worker: a plain function that Ray Train launches (or torchrun).

Each worker reads its own shard of the Parquet rows, trains the torchrec-sharded model, scores
its validation shard, and at every epoch end writes its checkpoint shards and reports them.
Rank 0 alone talks to MLflow and draws the progress bar.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
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
from recmtl.metrics.auc import auc
from recmtl.models.builder import build_model
from recmtl.modules.diagnostics import ExpertProbe, flat_metrics
from recmtl.predict import predict
from recmtl.train.checkpoint import (
    PROGRESS,
    load_progress,
    load_sharded,
    save_progress,
    save_sharded,
)
from recmtl.train.loop import run_epoch
from recmtl.train.rec_metrics import build_rec_metrics, computed
from recmtl.train.schedule import LRSchedule
from recmtl.train.sharding import shard_model
from recmtl.train.tracking import MetricBuffer


def worker_device(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def validation_auc(cfg: Config, model: torch.nn.Module, reader: ParquetBatchReader,
                   device: torch.device) -> dict[str, float | None]:
    """AUC per binary task in its sample space over all ranks' validation shards (collective)."""
    local = predict(model, reader.epoch(0), cfg.tasks, device)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    cols = {k: np.concatenate([g[k] for g in gathered]) for k in local}
    out: dict[str, float | None] = {}
    for t in cfg.tasks:
        if t.kind != "binary":
            continue
        keep = cols[t.space] > 0.5 if t.space else slice(None)
        out[t.name] = auc(cols[t.label][keep], cols[f"pred/{t.name}"][keep])
    return out


def train_readers(cfg: Config, rank: int, world: int) -> tuple[ParquetBatchReader, ParquetBatchReader]:
    """This rank's train and validation readers; ``data.batch_size`` is the global batch."""
    schema = FeatureSchema.from_config(cfg)
    root = cfg.data.root.rstrip("/")
    per_rank = -(-cfg.data.batch_size // world)
    train = ParquetBatchReader(f"{root}/train", schema, per_rank, rank, world,
                               shuffle=cfg.data.shuffle, seed=cfg.seed, prefetch=cfg.data.prefetch)
    valid = ParquetBatchReader(f"{root}/valid", schema, cfg.data.eval_batch_size, rank, world)
    return train, valid


def train_worker(loop_config: dict[str, Any]) -> None:
    quiet_third_party()
    cfg = config_from_dict(loop_config["config"])
    rank, world = dist.get_rank(), dist.get_world_size()
    device = worker_device(cfg)
    model = build_model(cfg, embedding_device="meta")
    dmp, optimizer, plan = shard_model(model, cfg.train, device, tables=cfg.features.tables)
    tracker = None
    if rank == 0 and loop_config.get("run_id"):
        spill = Path(loop_config.get("run_dir") or ".") / "mlflow-unlogged-metrics.jsonl"
        tracker = MetricBuffer(loop_config["tracking_uri"], loop_config["run_id"], spill)
        with contextlib.suppress(Exception):  # a plan is worth a warning, not the run
            tracker.client.log_text(loop_config["run_id"], str(plan), "sharding_plan.txt")

    train_reader, valid_reader = train_readers(cfg, rank, world)
    steps_per_epoch = train_reader.num_batches
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    sparse_opt, dense_opt = (opt for _, opt in optimizer.optimizers)
    schedule = LRSchedule([(cfg.train.sparse_schedule, list(sparse_opt.param_groups)),
                           (cfg.train.dense_schedule, list(dense_opt.param_groups))],
                          total_steps=cfg.train.epochs * steps_per_epoch)
    progress = _restore(dmp, optimizer, loop_config)
    schedule.set_step(progress["global_step"])
    if progress["global_step"] and rank == 0:
        print(f"resumed at epoch {progress['epoch']}, batch {progress['batch']}, "
              f"step {progress['global_step']}", flush=True)
    task_names = [t.name for t in cfg.tasks]
    rec_metrics = build_rec_metrics(cfg.tasks, train_reader.batch_size, device)
    global_step = progress["global_step"]
    for epoch in range(progress["epoch"], cfg.train.epochs):
        first = progress["batch"] if epoch == progress["epoch"] else 0
        bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch}",
                   disable=rank != 0, mininterval=5.0, unit="step", ncols=100)
        last = {"step": 0, "time": time.perf_counter()}
        base = global_step

        def on_log(step: int, losses: list[float], rows: int, bar: tqdm = bar,
                   last: dict[str, float] = last, base: int = base) -> None:
            now = time.perf_counter()
            rate = rows * world / (now - last["time"])
            tracked = computed(rec_metrics)  # collective: every rank computes at this step
            bar.update(step - int(last["step"]))
            bar.set_postfix(samples_s=f"{rate:,.0f}", loss=f"{sum(losses):.4f}")
            last.update(step=step, time=now)
            if tracker:
                metrics = {f"train/loss_{n}": v for n, v in zip(task_names, losses, strict=True)}
                lrs = {"train/lr_sparse": sparse_opt.param_groups[0]["lr"],
                       "train/lr_dense": dense_opt.param_groups[0]["lr"]}
                tracker.add(metrics | lrs | tracked | {"train/samples_per_s": rate}, base + step)
                tracker.flush()

        def after_step(done: int, epoch: int = epoch, first: int = first, base: int = base) -> None:
            step = base + done
            schedule.set_step(step)
            every = cfg.train.checkpoint_every_steps
            if every and step % every == 0 and first + done < steps_per_epoch:
                _report({"epoch": epoch, "step": step}, dmp, optimizer,
                        {"epoch": epoch, "batch": first + done, "global_step": step},
                        f"epoch-{epoch:04d}-step-{step:08d}", loop_config)
            if cfg.train.kill_worker_at_step == step and rank == world - 1:
                _fault_drill(step, loop_config)

        stats = run_epoch(dmp, optimizer, train_reader.epoch(epoch, first), cfg.tasks, device,
                          steps_per_epoch - first, cfg.train.log_every, on_log,
                          after_step=after_step, loss=cfg.loss, bf16=cfg.train.bf16,
                          rec_metrics=rec_metrics, pipelined=cfg.train.pipeline == "sparse_dist")
        bar.close()
        global_step += stats.steps
        counts = torch.tensor([stats.rows, stats.steady_rows], dtype=torch.int64, device=device)
        dist.all_reduce(counts)
        rows_trained, steady_rows = counts.tolist()
        if not cfg.train.max_steps_per_epoch and first == 0 and rows_trained != train_reader.total_rows:
            raise RuntimeError(f"epoch {epoch}: trained {rows_trained} rows of the "
                               f"{train_reader.total_rows} in the train split")
        probe = ExpertProbe(dmp.module.dense_ranker.backbone)
        with probe:
            val = validation_auc(cfg, dmp, valid_reader, device)
        diagnostics = _reduced_summary(probe, device)
        metrics: dict[str, Any] = {f"valid/auc_{k}": v for k, v in val.items() if v is not None}
        metrics |= {"epoch": epoch, "step": global_step, "rows_trained": rows_trained,
                    "rows_in_split": train_reader.total_rows,
                    "train/epoch_samples_per_s": steady_rows / max(stats.steady_seconds, 1e-9),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if tracker:
            tracker.add({k: float(v) for k, v in metrics.items()} | flat_metrics(diagnostics),
                        global_step)
            tracker.flush()
            with contextlib.suppress(Exception):  # buffered metrics carry on; the JSON is extra
                tracker.client.log_dict(loop_config["run_id"], diagnostics,
                                        f"diagnostics/epoch-{epoch:04d}.json")
            print(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                                if k.startswith("valid/")), flush=True)
        _report(metrics, dmp, optimizer, {"epoch": epoch + 1, "batch": 0,
                                          "global_step": global_step},
                f"epoch-{epoch:04d}", loop_config)
    if tracker:
        tracker.close()


def _reduced_summary(probe: ExpertProbe, device: torch.device) -> dict[str, Any]:
    """The probe's sums over every rank's validation shard (collective)."""
    keys = probe.keys()
    if keys:
        flat = torch.cat([probe.sums[k].reshape(-1) for k in keys]).to(device)
        dist.all_reduce(flat)
        offset = 0
        for k in keys:
            n = probe.sums[k].numel()
            probe.sums[k] = flat[offset:offset + n].view_as(probe.sums[k]).cpu()
            offset += n
    return probe.summary()


def _restore(model: torch.nn.Module, optimizer: Any, loop_config: dict[str, Any]
             ) -> dict[str, int]:
    """Loads the latest checkpoint into the sharded model and optimizers, if there is one
    (Ray's after a restart, or the newest under ``checkpoint_root``); returns the progress."""
    start = {"epoch": 0, "batch": 0, "global_step": 0}
    local_root = loop_config.get("checkpoint_root")
    if local_root:
        found = [p for p in Path(local_root).glob("epoch-*") if (p / PROGRESS).exists()]
        if not found:
            return start
        path = max(found, key=lambda p: load_progress(p)["global_step"])
        load_sharded(path, model, optimizer)
        return load_progress(path)
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return start
    with checkpoint.as_directory() as path:
        load_sharded(path, model, optimizer)
        return load_progress(path)


def _fault_drill(step: int, loop_config: dict[str, Any]) -> None:
    """Kills this worker process (SIGKILL, no cleanup) the first time the run reaches ``step``.

    Under Ray it first waits until the controller has taken in every reported checkpoint: the
    controller polls workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s), and a crash
    within that window of a report restarts from the checkpoint before it.
    """
    root = loop_config.get("run_dir") or loop_config.get("checkpoint_root")
    if not root:
        return
    marker = Path(root) / f"fault-drill-step-{step}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    if not loop_config.get("checkpoint_root"):
        import ray.train

        ray.train.get_all_reported_checkpoints(timeout_s=60)
    print(f"fault drill: killing rank {dist.get_rank()} (pid {os.getpid()}) at step {step}",
          flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _report(metrics: dict[str, Any], model: torch.nn.Module, optimizer: object,
            progress: dict[str, int], name: str, loop_config: dict[str, Any]) -> None:
    """Writes this rank's checkpoint shards (and, on rank 0, the progress) and hands them to
    Ray Train, or into ``checkpoint_root/name`` under torchrun."""
    local_root = loop_config.get("checkpoint_root")
    if local_root:  # torchrun: every rank writes into one shared directory
        path = Path(local_root) / name
        save_sharded(path, model, optimizer)
        if dist.get_rank() == 0:
            save_progress(path, progress)
        dist.barrier()
        return
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        save_sharded(tmp, model, optimizer)
        if dist.get_rank() == 0:
            save_progress(tmp, progress)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=name)
