"""`recmtl train`: Ray Train + torchrec -> checkpoint -> test report -> export, in one MLflow run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.dataset as ds

from pipelines.jobs.calibrate import fit_calibration
from pipelines.jobs.evaluate import evaluate
from pipelines.jobs.export import export
from pipelines.jobs.lineage import data_version, remap_dir, resolve_warm_start
from recmtl.config import Config, derive
from recmtl.data.preflight import check_feature_store
from recmtl.export.mlflow_model import log_bundle_model
from recmtl.train.checkpoint import load_unsharded
from recmtl.train.launch import absolute_data_root, fit, local_checkpoint
from recmtl.train.pool import WorkerPool
from recmtl.train.progress import epoch_seconds
from recmtl.train.tracking import check_reachable, resolve_tracking_uri, start_run

RUN_ID = "mlflow_run_id"  # in a run directory: its MLflow run, for a resumed run


def train(cfg: Config, quiet: bool = True, warm_start: str | None = None,
          tags: dict[str, str] | None = None, pool: WorkerPool | None = None,
          run_dir: Path | None = None) -> dict[str, Any]:
    """Trains, evaluates and exports ``cfg`` in one MLflow run; returns the summary (also
    written to ``<run dir>/summary.json``). The data and the tracking store are checked before
    Ray starts; ``quiet`` keeps third-party warnings and Ray's INFO lines out of the output.

    ``warm_start``: a checkpoint, run directory or MLflow run id to start from (``lineage.py``);
    today's tables may have grown and the workers may be more or fewer. ``tags`` go to the run.
    ``pool``: train on these kept workers (``recmtl/train/pool.py``) instead of a new Ray
    Train worker group. ``run_dir``: the run's directory (default: a new one under
    ``output_dir``); one that holds an unfinished run of a pool (its ``mlflow_run_id``) is
    resumed: the same MLflow run, training from its newest checkpoint.
    """
    cfg = absolute_data_root(cfg)
    check_feature_store(cfg)
    tracking_uri = resolve_tracking_uri(cfg)
    check_reachable(tracking_uri)
    source = resolve_warm_start(warm_start, tracking_uri) if warm_start else None
    if source:
        cfg = warm_rates(cfg)
    remaps = remap_dir(cfg.data.root, source) if source else None
    version = data_version(cfg.data.root)
    lineage = {"recmtl.data_version": version or ""}
    if source:
        lineage |= {"recmtl.warm_start": str(source.checkpoint),
                    "recmtl.parent_run": source.run_id or ""}
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(cfg.output_dir).resolve() / f"{cfg.name}-{stamp}"
        run_dir.mkdir(parents=True, exist_ok=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    known = run_dir / RUN_ID
    run_id = start_run(cfg, run_name=run_dir.name,
                       resume=known.read_text().strip() if known.exists() else None)
    known.write_text(run_id)
    mlflow.set_tags(lineage | (tags or {}))
    t0 = time.perf_counter()
    try:
        stored, fit_metrics = fit(cfg, run_dir, tracking_uri, run_id, quiet=quiet,
                                  warm_start=str(source.checkpoint) if source else None,
                                  remap_dir=str(remaps) if remaps else None, pool=pool)
        train_s = time.perf_counter() - t0
        laps = Laps()  # after training: checkpoint load, evaluate, export, log
        # With train.storage_path on object storage, a local copy is evaluated and exported.
        checkpoint = local_checkpoint(stored, run_dir)
        (run_dir / "checkpoint").write_text(str(checkpoint))
        mlflow.set_tags({"recmtl.checkpoint": str(checkpoint), "recmtl.checkpoint_uri": stored})
        # The checkpoint loaded once for calibration, evaluation and export; post-hoc
        # calibration (evaluate.calibration) fit once on the valid split for both.
        model = load_unsharded(cfg, checkpoint)
        calibration = fit_calibration(cfg, model)
        laps("load")
        report = evaluate(cfg, checkpoint, run_dir, calibration=calibration, model=model)
        laps("evaluate")
        exported = export(cfg, checkpoint, run_dir / "export", calibration=calibration,
                          model=model)
        laps("export")
        mlflow.log_metrics({f"test/auc_{k}": v["auc"] for k, v in report["tasks"].items()
                            if v["auc"] is not None} | {"train_seconds": train_s})
        if calibration is not None:
            mlflow.log_metrics({f"test/{key}_{when}_{k}": v[when][key]
                                for k, v in report["calibration"]["tasks"].items()
                                for when in ("before", "after") for key in ("calibration", "ece")
                                if v[when][key] is not None})
        mlflow.log_artifact(str(run_dir / "report.json"))
        mlflow.log_artifact(str(run_dir / "report.html"))
        if (run_dir / "predictions.parquet").exists():  # evaluate.save_predictions: for compare
            mlflow.log_artifact(str(run_dir / "predictions.parquet"))
        mlflow.log_artifacts(str(run_dir / "export"), artifact_path="export")
        example = ds.dataset(f"{cfg.data.root}/test", format="parquet").head(64)
        model_uri, model_version = log_bundle_model(run_dir / "export", example,
                                                    cfg.mlflow.registered_model_name)
        laps("log")
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()
    summary = {"run_id": run_id, "tracking_uri": tracking_uri, "run_dir": str(run_dir),
               "checkpoint": str(checkpoint), "checkpoint_uri": stored,
               "report": str(run_dir / "report.json"),
               "report_html": str(run_dir / "report.html"),
               "export": str(run_dir / "export"), "model_uri": model_uri,
               "model_version": model_version,
               "train_seconds": round(train_s, 1), "epoch_seconds": epoch_seconds(run_dir),
               "after_train_seconds": {k: round(v, 2) for k, v in laps.seconds.items()},
               "data_version": version,
               # the Ray node of each rank in the last epoch (after a lost node: fewer ranks)
               "worker_nodes": fit_metrics.get("worker_nodes"),
               "warm_start": str(source.checkpoint) if source else None,
               "parent_run": source.run_id if source else None,
               "parity_max_abs_diff": exported["parity"]["max_abs_diff"]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    worst = max(v for diffs in exported["parity"]["max_abs_diff"].values() for v in diffs.values())
    bundle = f"{summary['export']} (parity: max abs diff {worst:.1e}), model {model_uri}"
    print(f"\nrun      {run_id} in {tracking_uri}\n"
          f"report   {summary['report_html']}\n"
          f"bundle   {bundle}\n"
          f"trained  {train_s:.0f} s; the rest in {run_dir / 'summary.json'}")
    return summary


class Laps:
    """Seconds of consecutive steps: ``laps("evaluate")`` ends the step begun at the last lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.last = now - self.last, now


def warm_rates(cfg: Config) -> Config:
    """The config a warm-started run trains with: its learning rates scaled by
    ``train.warm_start`` (``dense_lr_scale``, ``sparse_lr_scale``)."""
    warm = cfg.train.warm_start
    if (warm.dense_lr_scale, warm.sparse_lr_scale) == (1.0, 1.0):
        return cfg
    return derive(cfg, {"train.dense_lr": cfg.train.dense_lr * warm.dense_lr_scale,
                        "train.sparse_lr": cfg.train.sparse_lr * warm.sparse_lr_scale})


def latest_checkpoint(cfg: Config) -> Path:
    """The checkpoint of the newest run of this config under ``output_dir``."""
    runs = sorted(Path(cfg.output_dir).glob(f"{cfg.name}-*/checkpoint"))
    if not runs:
        raise FileNotFoundError(f"no trained run of {cfg.name!r} under {cfg.output_dir}; "
                                "pass --checkpoint or run `recmtl train` first")
    return Path(runs[-1].read_text().strip())
