"""Driver side of training: starts (or joins) Ray and runs the worker loop on N workers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from recmtl.config import Config, derive
from recmtl.logs import quiet_ray_runtime_env
from recmtl.storage import checkpoint_uri, download_dir, is_uri
from recmtl.train.entry import train_worker
from recmtl.train.job import Tracking, WorkerJob
from recmtl.train.pool import WorkerPool
from recmtl.train.progress import ProgressView
from recmtl.train.sinks import METRICS, newest_checkpoint


def absolute_data_root(cfg: Config) -> Config:
    """Workers may run elsewhere; a local data root (and storage path) is made absolute before
    it travels."""
    changes = {}
    if not is_uri(cfg.data.root):
        changes["data.root"] = os.path.abspath(cfg.data.root)
    if cfg.train.storage_path and not is_uri(cfg.train.storage_path):
        changes["train.storage_path"] = os.path.abspath(cfg.train.storage_path)
    return derive(cfg, changes) if changes else cfg


def ensure_ray(num_workers: int, address: str | None = None, quiet: bool = True) -> None:
    """Joins ``address`` (the config's ``train.ray_address``) or ``$RAY_ADDRESS`` when set,
    else starts a local Ray with enough CPU slots. ``quiet``: the processes Ray starts keep
    third-party logs and warnings to themselves (``recmtl.logs``)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = quiet_ray_runtime_env() if quiet else None
    if quiet:  # after `import ray`, which sets its logger's level from RAY_LOGGER_LEVEL
        logging.getLogger("ray").setLevel(logging.ERROR)
    if address:
        if runtime_env:  # Ray Train's placement-group cleaner finds its cluster by this alone
            runtime_env["env_vars"]["RAY_ADDRESS"] = address
        ray.init(address=address, runtime_env=runtime_env)
    else:
        # Spot-node preemption watching has nothing to watch on one local node (and logs a
        # core-worker error line as it starts); a cluster keeps Ray's default.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        # address="local": a new Ray of our own even where another cluster runs on this
        # machine (`ray start`, a test's Cluster), which a bare ray.init() would join
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, num_workers + 1),
                 include_dashboard=False, configure_logging=False, runtime_env=runtime_env)


def scaling_config(cfg: Config) -> Any:
    """Ray Train's ``ScalingConfig`` from ``train``: workers, and CPUs (+ GPUs on cuda) each,
    packed onto few nodes or spread over many (``placement``). With ``min_workers`` the group
    is elastic, ``(min_workers, num_workers)``: after a lost node Ray Train restarts it with
    the workers the cluster still has room for (a resumed epoch is resharded over them) and
    grows it back when room returns."""
    from ray.train import ScalingConfig

    train = cfg.train
    use_gpu = train.device == "cuda"
    resources = {"CPU": train.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = train.gpus_per_worker
    workers: int | tuple[int, int] = train.num_workers
    if train.min_workers is not None and train.min_workers < train.num_workers:
        workers = (train.min_workers, train.num_workers)
    return ScalingConfig(num_workers=workers,  # type: ignore[arg-type]  # v2 takes (min, max)
                         use_gpu=use_gpu, resources_per_worker=resources,
                         placement_strategy=train.placement.upper())


def fit(cfg: Config, run_dir: Path, tracking_uri: str | None, run_id: str | None,
        quiet: bool = True, warm_start: str | None = None, remap_dir: str | None = None,
        pool: WorkerPool | None = None) -> tuple[str, dict[str, Any]]:
    """Trains on Ray Train; returns the last (sharded) checkpoint's directory or URI and the
    metrics rank 0 reported with it. Without ``run_id`` nothing goes to MLflow. ``warm_start``
    / ``remap_dir``: see ``WorkerJob``.

    Checkpoints go to ``<run_dir>/ray/train/``, or with ``train.storage_path`` (a URI such as
    ``s3://bucket/prefix``) to ``<storage_path>/<run dir name>/``: the workers write them with
    the credentials of their own environment (``recmtl/storage.py``), and
    ``local_checkpoint`` copies one back for evaluation and export.

    A ``DataError`` raised in any worker ends the run at once (no restart, whatever
    ``train.max_failures`` says: the same rows would fail again) and is raised here as it was.

    ``pool``: run on these kept workers instead of a new Ray Train worker group
    (``fit_on_pool``).
    """
    if pool is not None:
        return fit_on_pool(pool, cfg, run_dir, tracking_uri, run_id, quiet, warm_start,
                           remap_dir)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, TrainingFailedError
    from ray.train.torch import TorchConfig
    from ray.train.v2.api.config import LoggingConfig

    from recmtl.train.ray_policy import TorchTrainerDataErrorsFinal, worker_data_error

    ensure_ray(cfg.train.num_workers, cfg.train.ray_address, quiet=quiet)
    use_gpu = cfg.train.device == "cuda"
    tracking = Tracking(tracking_uri, run_id) if tracking_uri and run_id else None
    job = WorkerJob(cfg, run_dir=str(run_dir), tracking=tracking, quiet=quiet,
                    warm_start=warm_start, remap_dir=remap_dir)
    trainer = TorchTrainerDataErrorsFinal(
        train_worker,
        train_loop_config={"job": job.to_dict()},
        scaling_config=scaling_config(cfg),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=run_dir.name if cfg.train.storage_path else "train",  # type: ignore[call-arg]
                             storage_path=cfg.train.storage_path or str(run_dir / "ray"),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                             # quiet: a worker's error reaches the driver, which reports it once
                             logging_config=LoggingConfig("CRITICAL" if quiet else "INFO")),
    )
    try:
        with ProgressView(run_dir):
            result = trainer.fit()
    except TrainingFailedError as e:
        data_error = worker_data_error(e)
        if data_error is not None:
            raise data_error from None
        raise
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint (error: {result.error})")
    return (checkpoint_uri(result.checkpoint.filesystem, result.checkpoint.path),
            dict(result.metrics or {}))


def fit_on_pool(pool: WorkerPool, cfg: Config, run_dir: Path, tracking_uri: str | None,
                run_id: str | None, quiet: bool = True, warm_start: str | None = None,
                remap_dir: str | None = None) -> tuple[str, dict[str, Any]]:
    """``fit`` on a kept ``WorkerPool``. Checkpoints go to ``<run_dir>/ray/train/`` (the
    layout of a Ray Train run), and a run directory trained before resumes from its newest
    one there: a job killed and run again on the same ``run_dir`` trains only what is left."""
    root = run_dir / "ray" / "train"
    tracking = Tracking(tracking_uri, run_id) if tracking_uri and run_id else None
    job = WorkerJob(cfg, run_dir=str(run_dir), tracking=tracking, quiet=quiet,
                    checkpoint_root=str(root), warm_start=warm_start, remap_dir=remap_dir)
    with ProgressView(run_dir):
        pool.run(job)
    newest = newest_checkpoint(root)
    if newest is None:
        raise RuntimeError(f"training finished without a checkpoint in {root}")
    return str(newest), json.loads((newest / METRICS).read_text())


def local_checkpoint(checkpoint: str, run_dir: Path) -> Path:
    """A checkpoint as a local directory: itself when local, else a copy of it under
    ``<run_dir>/ray/train/<its name>`` (the layout of a run without ``train.storage_path``,
    so that ``recmtl evaluate`` / ``export`` find the run directory from it)."""
    if not is_uri(checkpoint):
        return Path(checkpoint)
    return download_dir(checkpoint, run_dir / "ray" / "train" / checkpoint.rstrip("/").rsplit("/", 1)[-1])
