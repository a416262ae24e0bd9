"""MLflow: the driver owns the run; rank 0 logs step metrics into it in batches.

An unreachable server fails the job before any compute. If the server drops mid-run, training
goes on: metrics stay buffered on rank 0 and are logged when it answers again, or written to a
local JSONL file beside the run if it never does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from recmtl.config import Config, ConfigError, flatten
from recmtl.data.fingerprint import data_fingerprint
from recmtl.errors import RecmtlError


class TrackingUnavailable(RecmtlError, RuntimeError):
    """The MLflow tracking store cannot be reached."""


@contextlib.contextmanager
def fast_http(timeout_s: float, retries: int = 0) -> Iterator[None]:
    """MLflow's HTTP client retries with backoff for minutes by default; probes must not."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT",
                                           "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout_s))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_reachable(uri: str, timeout_s: float = 10) -> None:
    """Raises ``TrackingUnavailable`` at once when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with fast_http(timeout_s):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # connection refused, timeout, HTTP error: all mean "not usable"
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({type(e).__name__}: {e}); start it, "
            "or set mlflow.tracking_uri / MLFLOW_TRACKING_URI. Nothing was computed.") from e


WHERE_NOT_WHAT = (("data", "root"), ("output_dir",), ("mlflow", "tracking_uri"),
                  ("train", "storage_path"), ("daily",))


def config_hash(cfg: Config) -> str:
    """16 hex digits of sha256 over the config, less where things are (the data root, the
    output directory, the tracking store, checkpoint storage) and the daily job's window:
    one value for one config wherever and on whichever days it runs (the data has its own
    ``recmtl.data_fingerprint`` / ``data_version``)."""
    raw = cfg.to_dict()
    for *parents, key in WHERE_NOT_WHAT:
        node = raw
        for parent in parents:
            node = node.get(parent) or {}
        node.pop(key, None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def git_commit() -> str:
    """The commit of the recmtl checkout running this job (``-dirty`` with local changes)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve_tracking_uri(cfg: Config) -> str:
    """Config, else ``$MLFLOW_TRACKING_URI``, else a sqlite file in the output directory."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{out / 'mlflow.db'}"


def start_run(cfg: Config, run_name: str, resume: str | None = None) -> str:
    """Starts the job's MLflow run with the resolved config as params; returns its id.
    ``resume``: the id of an unfinished run of the same config to continue instead."""
    uri = resolve_tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    wanted = cfg.mlflow.artifact_location
    if experiment is not None and wanted and (
            experiment.artifact_location.rstrip("/") != wanted.rstrip("/")):
        raise ConfigError(f"mlflow.artifact_location: experiment {cfg.mlflow.experiment!r} "
                          f"already keeps its artifacts at {experiment.artifact_location}; "
                          f"name a new mlflow.experiment for {wanted}")
    if experiment is not None:
        experiment_id = experiment.experiment_id
    elif cfg.mlflow.artifact_location:  # e.g. s3://bucket/mlflow: boto3 reads the credentials
        experiment_id = mlflow.create_experiment(cfg.mlflow.experiment,
                                                 artifact_location=cfg.mlflow.artifact_location)
    elif uri.startswith("sqlite:///"):
        # A local store keeps artifacts beside its database, not in the caller's cwd.
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        experiment_id = mlflow.create_experiment(cfg.mlflow.experiment,
                                                 artifact_location=artifacts.as_uri())
    else:
        experiment_id = mlflow.create_experiment(cfg.mlflow.experiment)
    if cfg.mlflow.system_metrics:
        mlflow.set_system_metrics_sampling_interval(cfg.mlflow.system_metrics_interval_s)
    # The experiment goes to this run only: mlflow.set_experiment would leave it as the
    # process's active experiment, which a caller on another store would then inherit.
    run = (mlflow.start_run(run_id=resume, log_system_metrics=cfg.mlflow.system_metrics)
           if resume else
           mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                            log_system_metrics=cfg.mlflow.system_metrics))
    mlflow.set_tags({"recmtl.git_commit": git_commit(), "recmtl.config_hash": config_hash(cfg),
                     "recmtl.data_fingerprint": data_fingerprint(cfg.data.root)})
    if resume:  # the params are the run's first config's; MLflow refuses to change them
        mlflow.log_dict(cfg.to_dict(), "config-resumed.yaml")
        return run.info.run_id
    params = {k: str(v) for k, v in flatten(cfg.to_dict()).items()}
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
        mlflow.log_params(dict(items[i:i + 100]))
    mlflow.log_dict(cfg.to_dict(), "config.yaml")
    log_data_stats(cfg.data.root)
    return run.info.run_id


def log_data_stats(root: str) -> None:
    """When the data came from `recmtl prepare` or `recmtl prepare-census`, its ``stats.json``
    goes to the run; rows per split, what each bad-input policy did (nulls mapped to the OOV
    id, nulls filled with the mean, ids unseen in train) and the rows read as a wider type
    become ``data/<split>/rows``, ``data/<split>/<policy>/<feature>`` and
    ``data/type_casts/<column>`` metrics. A section the file lacks logs nothing."""
    if "://" in root or not (Path(root) / "stats.json").exists():
        return
    stats = json.loads((Path(root) / "stats.json").read_text())
    mlflow.log_artifact(str(Path(root) / "stats.json"), artifact_path="data")
    metrics: dict[str, float] = {}
    for split, s in (stats.get("splits") or {}).items():
        if "rows" in s:
            metrics[f"data/{split}/rows"] = float(s["rows"])
        metrics |= {f"data/{split}/{k}": float(v)
                    for k, v in (s.get("policy_counts") or {}).items()}
    for column, cast in (stats.get("type_casts") or {}).items():
        metrics[f"data/type_casts/{column}"] = float(cast["rows"])
    if metrics:
        mlflow.log_metrics(metrics)


class MetricBuffer:
    """Buffers ``(key, value, step)`` and writes them with one ``log_batch`` call per flush.

    A flush that fails keeps the metrics (training goes on) and says so once; the next flush
    that succeeds logs the backlog. ``close`` retries, then spills what is left to
    ``spill_path`` as JSONL (key, value, timestamp, step per line).
    """

    def __init__(self, tracking_uri: str, run_id: str, spill_path: str | Path | None = None,
                 timeout_s: float = 5) -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self.pending: list[Metric] = []
        self.spill_path = Path(spill_path) if spill_path else None
        self.timeout_s = timeout_s
        self.failing = False

    def add(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> bool:
        """Logs what is pending; returns False (keeping it) if the server does not answer."""
        try:
            with fast_http(self.timeout_s):
                while self.pending:
                    self.client.log_batch(self.run_id, metrics=self.pending[:1000])
                    self.pending = self.pending[1000:]
        except Exception as e:
            if not self.failing:
                print(f"MLflow unreachable ({type(e).__name__}); buffering metrics, training "
                      "goes on", file=sys.stderr, flush=True)
            self.failing = True
            return False
        if self.failing:
            print("MLflow reachable again: buffered metrics logged", file=sys.stderr, flush=True)
            self.failing = False
        return True

    def close(self, attempts: int = 3, wait_s: float = 5) -> None:
        for attempt in range(attempts):
            if self.flush():
                return
            if attempt + 1 < attempts:
                time.sleep(wait_s)
        if self.spill_path and self.pending:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "a") as f:
                for m in self.pending:
                    f.write(json.dumps({"key": m.key, "value": m.value,
                                        "timestamp": m.timestamp, "step": m.step}) + "\n")
            print(f"MLflow never came back: {len(self.pending)} metrics written to "
                  f"{self.spill_path}", file=sys.stderr, flush=True)
            self.pending = []
