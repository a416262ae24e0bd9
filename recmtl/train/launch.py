"""Driver side of training: starts (or joins) Ray and runs the worker loop on N workers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recmtl.config import Config
from recmtl.train.worker import train_worker


def absolute_data_root(cfg: Config) -> Config:
    """Workers may run elsewhere; a local data root is made absolute before it travels."""
    if "://" in cfg.data.root:
        return cfg
    return cfg.derive({"data.root": os.path.abspath(cfg.data.root)})


def ensure_ray(num_workers: int, address: str | None = None) -> None:
    """Joins ``address`` (the config's ``train.ray_address``) or ``$RAY_ADDRESS`` when set,
    else starts a local Ray with enough CPU slots."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, num_workers + 1), include_dashboard=False,
                 configure_logging=False)


def scaling_config(cfg: Config) -> Any:
    """Ray Train's ``ScalingConfig`` from ``train``: workers, and CPUs (+ GPUs on cuda) each."""
    from ray.train import ScalingConfig

    use_gpu = cfg.train.device == "cuda"
    resources = {"CPU": cfg.train.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = cfg.train.gpus_per_worker
    return ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=use_gpu,
                         resources_per_worker=resources)


def fit(cfg: Config, run_dir: Path, tracking_uri: str | None, run_id: str | None
        ) -> tuple[Path, dict[str, Any]]:
    """Trains on Ray Train; returns the last (sharded) checkpoint's directory and the metrics
    rank 0 reported with it. Without ``run_id`` nothing goes to MLflow."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ensure_ray(cfg.train.num_workers, cfg.train.ray_address)
    use_gpu = cfg.train.device == "cuda"
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg.to_dict(), "tracking_uri": tracking_uri,
                           "run_id": run_id, "run_dir": str(run_dir)},
        scaling_config=scaling_config(cfg),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name="train", storage_path=str(run_dir / "ray"),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint (error: {result.error})")
    return Path(result.checkpoint.path), dict(result.metrics or {})
