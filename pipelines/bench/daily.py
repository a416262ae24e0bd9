"""Day over day, three ways, on the synthetic store with churn and drift (issue #14):

(a) the daily job: each day prepared from the day before and trained warm from yesterday's
    model on that day alone (`recmtl daily`);
(b) a model retrained from scratch every day on all days so far;
(c) day 0's model, never updated.

Each is scored on day d + 1's raw rows through its own bundle (the same rows for all three),
so the AUCs compare directly. Prints one row per day and task, and the training seconds of
(a) and (b); writes them as JSON (``--json``, default: the work directory's
``bench-daily.json``).

    recmtl generate configs/daily/daily.yaml
    python -m pipelines.bench.daily configs/daily/daily.yaml [dotted.key=value ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from pipelines.bench.harness import bench_parser, parse, print_table, run_bench, write_results
from pipelines.feature_store.partitions import read_rows
from pipelines.jobs.daily import daily, prepare_day, raw_aucs, window
from pipelines.jobs.lineage import run_dir_of
from recmtl.config import load_config


def bench_daily(config: str, overrides: list[str]) -> dict[str, Any]:
    from pipelines.jobs.train import train

    cfg = load_config(config, overrides)
    config_dir = Path(config).resolve().parent
    days = window(cfg, config_dir)
    work = Path(cfg.daily.work_dir).resolve()
    warm = daily(config, [*overrides, f"daily.work_dir={work / 'warm'}"])
    spec = (config_dir / cfg.daily.spec) if not Path(cfg.daily.spec).is_absolute() \
        else Path(cfg.daily.spec)
    tasks = [t.name for t in cfg.tasks if t.kind == "binary"]
    first_bundle = _bundle_of(warm["days"][0]["run_id"], cfg)
    rows: list[dict[str, Any]] = []
    for i, (day, a) in enumerate(zip(days, warm["days"], strict=True)):
        history = tuple(d.raw for d in days[:i])
        scratch_dir = prepare_day(day, spec, config, work / "scratch", None,
                                  cfg.daily.valid_hours, history)
        day_cfg = load_config(scratch_dir / f"{_name(spec)}.yaml",
                              [*overrides, f"output_dir={work / 'scratch' / 'runs'}",
                               f"data.root={scratch_dir}"])
        t0 = time.perf_counter()
        b = train(day_cfg)
        b_seconds = time.perf_counter() - t0
        test = read_rows(day.next_raw)
        b_auc = raw_aucs(b["export"], test, day_cfg, tasks)
        c_auc = raw_aucs(first_bundle, test, day_cfg, tasks)
        rows.append({"day": day.index, "warm": a["auc"], "scratch": b_auc, "stale": c_auc,
                     "warm_train_s": a["train_seconds"], "scratch_train_s": b["train_seconds"],
                     "warm_epoch_s": a["epoch_seconds"], "scratch_epoch_s": b["epoch_seconds"],
                     "scratch_job_s": b_seconds, "scratch_train_days": i + 1})
        print(f"day {day.index}: retrained from scratch on {i + 1} day(s) and scored", flush=True)
    print_table([{"day": r["day"], "task": t, "warm": r["warm"][t], "scratch": r["scratch"][t],
                  "stale": r["stale"][t], "warm - scratch": r["warm"][t] - r["scratch"][t]}
                 for r in rows for t in tasks],
                {"warm": ".4f", "scratch": ".4f", "stale": ".4f", "warm - scratch": "+.4f"})
    # training seconds: the whole job, and the part spent in epochs
    print_table([{"day": r["day"], "warm job s": r["warm_train_s"], "warm epochs s": r["warm_epoch_s"],
                  "scratch job s": r["scratch_train_s"], "scratch epochs s": r["scratch_epoch_s"],
                  "scratch days of rows": r["scratch_train_days"]} for r in rows],
                {c: ".0f" for c in ("warm job s", "warm epochs s", "scratch job s",
                                    "scratch epochs s")})
    return {"config": config, "overrides": overrides, "days": rows}


def _bundle_of(run_id: str, cfg: Any) -> Path:
    from mlflow.tracking import MlflowClient

    from recmtl.train.tracking import resolve_tracking_uri

    tags = MlflowClient(resolve_tracking_uri(cfg)).get_run(run_id).data.tags
    return run_dir_of(tags["recmtl.checkpoint"]) / "export"


def _name(spec: Path) -> str:
    from recmtl.config import read_yaml_mapping

    return str(read_yaml_mapping(spec)["name"])


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("daily", __doc__, config="required")
    args = parse(parser, argv)

    def run() -> None:
        work = Path(load_config(args.config, args.overrides).daily.work_dir).resolve()
        write_results(args, bench_daily(args.config, args.overrides),
                      default=work / "bench-daily.json")

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
