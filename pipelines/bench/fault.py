"""What a lost worker costs: the same Ray job twice, uninterrupted and with its last worker
SIGKILLed mid-epoch (``train.kill_worker_at_step``, one restart allowed), taking turns
``--repeats`` times; prints both wall times (medians), the difference and the validation AUCs
of both runs (the last of each).

    recmtl generate configs/smoke.yaml
    python -m pipelines.bench.fault configs/smoke.yaml --kill-at 30 --checkpoint-every 20
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

from pipelines.bench.harness import (
    bench_parser,
    interleave,
    parse,
    print_table,
    run_bench,
    timed,
    write_results,
)
from recmtl.config import Config, derive, load_config
from recmtl.train.launch import absolute_data_root, fit


def bench_fault(cfg: Config, kill_at: int, checkpoint_every: int, repeats: int) -> dict[str, Any]:
    """Wall seconds of each run, in turns, and the metrics of the last of each."""
    cfg = absolute_data_root(cfg)
    base = derive(cfg, {"train.checkpoint_every_steps": checkpoint_every})
    runs = {"uninterrupted": base,
            "killed": derive(base, {"train.kill_worker_at_step": kill_at,
                                   "train.max_failures": 1})}
    metrics: dict[str, dict[str, Any]] = {}
    rounds = {name: count() for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        def job(name: str) -> Callable[[], None]:
            def fit_once() -> None:
                run_dir = Path(tmp) / f"{name}-{next(rounds[name])}"
                _, metrics[name] = fit(runs[name], run_dir, None, None)
            return fit_once

        turns = interleave({name: timed(job(name)) for name in runs}, "uninterrupted", repeats)
    seconds = {name: turns.median(name) for name in runs}
    aucs = sorted(k for k in metrics["uninterrupted"] if k.startswith("valid/auc_"))
    print_table([{"run": name, "wall s": seconds[name], "x uninterrupted":
                  turns.ratio(name) if name != "uninterrupted" else None}
                 | {key.removeprefix("valid/"): metrics[name][key] for key in aucs}
                 for name in runs], {"wall s": ".1f", "x uninterrupted": ".2f"})
    lost = seconds["killed"] - seconds["uninterrupted"]
    print(f"a worker killed at step {kill_at} cost {lost:.1f} s")
    return {"kill_at": kill_at, "seconds": turns.summary(), "lost_s": lost,
            "metrics": {name: {k: metrics[name][k] for k in aucs} for name in runs}}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("fault", __doc__, config="required", repeats=1,
                          repeats_help="rounds of uninterrupted then killed")
    parser.add_argument("--kill-at", type=int, default=30, help="global step of the kill")
    parser.add_argument("--checkpoint-every", type=int, default=20)
    args = parse(parser, argv)
    return run_bench(lambda: write_results(args, bench_fault(
        load_config(args.config, args.overrides), args.kill_at, args.checkpoint_every,
        args.repeats)))


if __name__ == "__main__":
    sys.exit(main())
