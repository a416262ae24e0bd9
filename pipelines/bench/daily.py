"""Day over day, three ways, on a store of daily raw exports (issues #14, #26):

(a) the daily job (`recmtl daily`): each day prepared from the day before and trained warm
    from yesterday's model on that day alone, run as two invocations: the first ``--split``
    days on ``--first-workers`` workers, the rest continued by a second invocation on
    ``--second-workers`` (the checkpoint resharded onto another worker count);
(b) a model retrained from scratch every day on all days so far (`recmtl train` on a
    preparation of days 0..d, a new Ray Train worker group each day, as a team would run it);
(c) day 0's model, never updated.

``--variant NAME=key=value,key=value`` adds a run of (a) with those overrides (repeatable):
the warm job under other settings, scored on the same rows.

The bench's own directories under ``daily.work_dir`` (``warm/``, ``scratch/``, one per
variant) are removed first: every run trains afresh.

Each model is scored on day d + 1's raw rows through its own bundle (the same rows for all),
on every row and on the new-id rows: those whose id in some vocabulary feature the daily
job's day d preparation lacks (one set of rows for all three). Prints per day and task the
AUCs, the differences to (b), and the seconds of a whole day (prepare, train, evaluate,
export, register, promote) of (a) against (b)'s, with the epoch seconds of each; writes them
as JSON (``--json``, default: the work directory's ``bench-daily.json``).

    recmtl generate configs/daily/daily.yaml
    python -m pipelines.bench.daily configs/daily/daily.yaml [dotted.key=value ...]
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.bench.harness import bench_parser, parse, print_table, run_bench, write_results
from pipelines.feature_store.partitions import read_rows
from pipelines.jobs.daily import (
    daily,
    new_id_figures,
    prepare_day,
    raw_scores,
    task_aucs,
    window,
)
from recmtl.config import load_config


def bench_daily(config: str, overrides: list[str], split: int = 2, first_workers: int = 2,
                second_workers: int = 3, variants: dict[str, list[str]] | None = None
                ) -> dict[str, Any]:
    cfg = load_config(config, overrides)
    config_dir = Path(config).resolve().parent
    days = window(cfg, config_dir)
    work = Path(cfg.daily.work_dir).resolve()
    tasks = [t.name for t in cfg.tasks if t.kind == "binary"]
    for old in ("warm", "scratch", *(variants or {})):  # the bench's own runs start afresh
        shutil.rmtree(work / old, ignore_errors=True)
    model = cfg.mlflow.registered_model_name or cfg.name
    warm = _warm(config, overrides, work / "warm", len(days), split, first_workers,
                 second_workers)
    # each variant its own registered model: its champion is its own
    others = {name: _warm(config, [*overrides, *extra,
                                   f"mlflow.registered_model_name={model}-{name}"],
                          work / name, len(days), len(days), first_workers, first_workers)
              for name, extra in (variants or {}).items()}
    spec = (config_dir / cfg.daily.spec) if not Path(cfg.daily.spec).is_absolute() \
        else Path(cfg.daily.spec)
    first_bundle = Path(warm[0]["run_dir"]) / "export"
    rows: list[dict[str, Any]] = []
    for i, (day, a) in enumerate(zip(days, warm, strict=True)):
        t0 = time.perf_counter()
        history = tuple(d.raw for d in days[:i])
        scratch_dir = prepare_day(day, spec, config, work / "scratch", None,
                                  cfg.daily.valid_hours, history)
        day_cfg = load_config(scratch_dir / f"{_name(spec)}.yaml",
                              [*overrides, f"output_dir={work / 'scratch' / 'runs'}",
                               f"data.root={scratch_dir}",
                               f"train.num_workers={second_workers if i >= split else first_workers}"])
        b = _train(day_cfg)
        scratch_s = time.perf_counter() - t0  # prepare, train, evaluate, export, register
        test = read_rows(day.next_raw)
        scores = {"warm": raw_scores(Path(a["run_dir"]) / "export", test),
                  "scratch": raw_scores(b["export"], test),
                  "stale": raw_scores(first_bundle, test)}
        scores |= {name: raw_scores(Path(runs[i]["run_dir"]) / "export", test)
                   for name, runs in others.items()}
        new = new_id_figures(Path(a["run_dir"]) / "export", test, day_cfg, tasks, scores)
        rows.append({"day": a["name"], "warm_workers": second_workers if i >= split else first_workers,
                     "auc": {who: task_aucs(s, test, day_cfg, tasks) for who, s in scores.items()},
                     "new_ids": new,
                     "warm_day_s": a["seconds"]["total"], "warm_epoch_s": a["epoch_seconds"],
                     "warm_seconds": a["seconds"], "scratch_day_s": scratch_s,
                     "scratch_epoch_s": b["epoch_seconds"], "scratch_train_days": i + 1,
                     "variants_day_s": {n: r[i]["seconds"]["total"] for n, r in others.items()},
                     "variants_epoch_s": {n: r[i]["epoch_seconds"] for n, r in others.items()}})
        print(f"{a['name']}: retrained from scratch on {i + 1} day(s) and scored", flush=True)
    _print(rows, tasks, list(others))
    return {"config": config, "overrides": overrides, "split": split,
            "first_workers": first_workers, "second_workers": second_workers,
            "variants": variants or {}, "days": rows}


def _warm(config: str, overrides: list[str], work: Path, days: int, split: int,
          first_workers: int, second_workers: int) -> list[dict[str, Any]]:
    """The daily job over the window in two invocations (the second continuing the first)."""
    base = [*overrides, f"daily.work_dir={work}"]
    first = daily(config, [*base, f"daily.days={min(split, days)}",
                           f"train.num_workers={first_workers}"])
    if split >= days:
        return list(first["days"])
    return list(daily(config, [*base, f"daily.days={days}",
                               f"train.num_workers={second_workers}"])["days"])


def _train(cfg: Any) -> dict[str, Any]:
    from pipelines.jobs.train import train

    return train(cfg)


def _print(rows: list[dict[str, Any]], tasks: list[str], variants: list[str]) -> None:
    who = ["warm", "scratch", "stale", *variants]
    table = []
    for r in rows:
        for t in tasks:
            line: dict[str, Any] = {"day": r["day"], "task": t}
            line |= {w: r["auc"][w].get(t) for w in who}
            line |= {f"{w} - scratch": r["auc"][w].get(t, float("nan")) - r["auc"]["scratch"][t]
                     for w in who if w not in ("scratch",)}
            table.append(line)
    print_table(table, {c: ".4f" for c in who} | {f"{w} - scratch": "+.4f" for w in who})
    new = [{"day": r["day"], "task": t, "new-id rows": r["new_ids"].get("rows"),
            "share": r["new_ids"].get("share")} | {w: r["new_ids"]["auc"][w].get(t) for w in who}
           for r in rows if r["new_ids"] for t in tasks]
    if new:
        print("\non the new-id rows")
        print_table(new, {c: ".4f" for c in who} | {"share": ".1%"})
    print("\nseconds of a whole day (prepare, train, evaluate, export, register, promote)")
    print_table([{"day": r["day"], "warm workers": r["warm_workers"], "warm day s": r["warm_day_s"],
                  "warm epoch s": r["warm_epoch_s"],
                  "warm day / epoch": r["warm_day_s"] / max(r["warm_epoch_s"] or 1e-9, 1e-9),
                  "scratch day s": r["scratch_day_s"], "scratch epoch s": r["scratch_epoch_s"],
                  "warm / scratch": r["warm_day_s"] / r["scratch_day_s"]} for r in rows],
                {"warm day s": ".1f", "warm epoch s": ".1f", "scratch day s": ".1f",
                 "scratch epoch s": ".1f", "warm day / epoch": ".2f", "warm / scratch": ".2f"})


def _name(spec: Path) -> str:
    from recmtl.config import read_yaml_mapping

    return str(read_yaml_mapping(spec)["name"])


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    if not name or not rest:
        raise ValueError(f"--variant {text!r}: expected NAME=key=value[,key=value...]")
    return name, rest.split(",")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("daily", __doc__, config="required")
    parser.add_argument("--split", type=int, default=2,
                        help="days of the first invocation of the daily job (default: 2)")
    parser.add_argument("--first-workers", type=int, default=2)
    parser.add_argument("--second-workers", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], type=_variant,
                        metavar="NAME=key=value[,key=value]",
                        help="also run the daily job with these overrides (repeatable)")
    args = parse(parser, argv)

    def run() -> None:
        work = Path(load_config(args.config, args.overrides).daily.work_dir).resolve()
        write_results(args, bench_daily(args.config, args.overrides, args.split,
                                        args.first_workers, args.second_workers,
                                        dict(args.variant)),
                      default=work / "bench-daily.json")

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
