"""MLflow: the driver owns the run; rank 0 logs step metrics into it in batches."""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from recmtl.config import Config, flatten


def resolve_tracking_uri(cfg: Config) -> str:
    """Config, else ``$MLFLOW_TRACKING_URI``, else a sqlite file in the output directory."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{out / 'mlflow.db'}"


def start_run(cfg: Config, run_name: str) -> str:
    """Starts the job's MLflow run with the resolved config as params; returns its id."""
    uri = resolve_tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(cfg.mlflow.experiment) is None:
        # A local store keeps artifacts beside its database, not in the caller's cwd.
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(cfg.mlflow.experiment)
    run = mlflow.start_run(run_name=run_name)
    params = {k: str(v) for k, v in flatten(cfg.to_dict()).items()}
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
        mlflow.log_params(dict(items[i:i + 100]))
    mlflow.log_dict(cfg.to_dict(), "config.yaml")
    return run.info.run_id


class MetricBuffer:
    """Buffers ``(key, value, step)`` and writes them with one ``log_batch`` call per flush."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self.pending: list[Metric] = []

    def add(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        for i in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        self.pending = []
