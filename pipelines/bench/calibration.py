"""Post-hoc calibration methods side by side (issue #16, item 1), from ONE trained model.

Trains CONFIG once with `recmtl train` (or reuses ``--checkpoint``), collects the model's
logits on the valid and test splits once, then for each method (none, isotonic with the
config's knot cap and with every knot, platt, temperature) fits the calibrators on valid as
`recmtl train` does (``recmtl.metrics.calibrate``) and scores the test split: per task AUC,
p/y (mean predicted over mean observed), ECE (10 equal-mass bins) and logloss, and the test
logloss change against no calibration with a 95% interval (a mean of per-row differences,
normal approximation). Composed tasks are the product of their calibrated parts. The results
go to ``--json`` (default: ``<output_dir>/bench-calibration.json``).

    recmtl generate configs/demo.yaml data.root=data/calibration synthetic.train_rows=300000
    python -m pipelines.bench.calibration configs/demo.yaml data.root=data/calibration
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.bench.harness import bench_parser, parse, print_table, run_bench, write_results
from recmtl.config import Config, derive, load_config
from recmtl.metrics.calibrate import calibrated_columns, fit_task_calibrators
from recmtl.metrics.report import build_report

METRICS = ("auc", "calibration", "ece", "logloss")


def split_columns(cfg: Config, checkpoint: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{"valid": cols, "test": cols}``: ``recmtl.predict.predict(..., logits=True)``."""
    from recmtl.data.reader import ParquetBatchReader
    from recmtl.data.schema import FeatureSchema
    from recmtl.predict import predict
    from recmtl.train.checkpoint import load_unsharded

    model = load_unsharded(cfg, checkpoint)
    schema = FeatureSchema.from_config(cfg)
    out = {}
    for split in ("valid", "test"):
        reader = ParquetBatchReader(f"{cfg.data.root.rstrip('/')}/{split}", schema,
                                    cfg.data.eval_batch_size)
        out[split] = predict(model, reader.epoch(0), cfg.tasks, logits=True)
    return out


def _row_logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)  # the report's logloss clips the same way
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def logloss_delta(cfg: Config, base: dict[str, np.ndarray], cols: dict[str, np.ndarray],
                  task: str) -> dict[str, Any]:
    """Test logloss of ``cols`` minus ``base`` on the task's rows, with a 95% interval."""
    t = cfg.task(task)
    keep = cols[t.space] > 0.5 if t.space else np.ones(len(cols[t.label]), dtype=bool)
    y = cols[t.label][keep]
    d = (_row_logloss(y, cols[f"pred/{task}"][keep])
         - _row_logloss(y, base[f"pred/{task}"][keep]))
    half = 1.96 * float(d.std(ddof=1)) / np.sqrt(len(d))
    return {"delta": float(d.mean()), "ci95": [float(d.mean()) - half, float(d.mean()) + half]}


def methods(cfg: Config) -> list[tuple[str, str, int | None]]:
    """(label, method, max_knots) of every variant compared."""
    knots = cfg.evaluate.calibration_max_knots
    return [("none", "none", None), (f"isotonic-{knots}", "isotonic", knots),
            ("isotonic-all", "isotonic", None), ("platt", "platt", None),
            ("temperature", "temperature", None)]


def bench_calibration(cfg: Config, checkpoint: str | None = None) -> dict[str, Any]:
    if checkpoint is None:
        from pipelines.jobs.train import train

        summary = train(derive(cfg, {"evaluate.calibration": "none"}))
        checkpoint = summary["checkpoint"]
    cols = split_columns(cfg, checkpoint)
    binary = [t.name for t in cfg.tasks if t.kind == "binary"]
    results = []
    for label, method, knots in methods(cfg):
        started = time.perf_counter()
        test, fit = cols["test"], None
        if method != "none":
            fitted = fit_task_calibrators(cfg.tasks, cols["valid"], method, knots)
            test = calibrated_columns(cols["test"], cfg.tasks, fitted.calibrators)
            fit = fitted.tasks
        seconds = time.perf_counter() - started
        report = build_report(cfg.tasks, test, bootstrap=0)
        results.append({
            "method": label, "fit_and_apply_seconds": round(seconds, 2), "fit": fit,
            "tasks": {name: {k: report["tasks"][name][k] for k in METRICS}
                      | {"logloss_delta": logloss_delta(cfg, cols["test"], test, name)}
                      for name in binary}})
    rows = {s: len(c[cfg.tasks[0].label]) for s, c in cols.items()}
    result = {"config": cfg.name, "data": cfg.data.root, "checkpoint": str(checkpoint),
              "rows": rows, "results": results}
    print(f"fit on {rows['valid']:,} valid rows, scored on {rows['test']:,} test rows")
    print_table(table_rows(result), {"auc": ".4f", "p/y": ".4f", "ece": ".4f", "logloss": ".5f"})
    return result


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method and task; ``dlogloss`` is against none, with its 95% interval."""
    rows = []
    for r in result["results"]:
        for task, m in r["tasks"].items():
            d = m["logloss_delta"]
            rows.append({"method": r["method"], "task": task, "auc": m["auc"],
                         "p/y": m["calibration"], "ece": m["ece"], "logloss": m["logloss"],
                         "dlogloss [95% interval]": None if r["method"] == "none" else
                         f"{d['delta']:+.5f} [{d['ci95'][0]:+.5f}, {d['ci95'][1]:+.5f}]"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("calibration", __doc__, config="required")
    parser.add_argument("--checkpoint", help="score this trained checkpoint instead of training")
    args = parse(parser, argv)

    def run() -> None:
        cfg = load_config(args.config, args.overrides)
        write_results(args, bench_calibration(cfg, args.checkpoint),
                      default=Path(cfg.output_dir) / "bench-calibration.json")

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
