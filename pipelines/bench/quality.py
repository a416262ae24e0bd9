"""Model quality of every architecture on one data set: test AUC, logloss and training
samples/s per task, each variant a real `recmtl train` run (Ray, MLflow, report, export).

    python -m pipelines.bench.quality data/census/census.yaml --suite census
    python -m pipelines.bench.quality configs/demo.yaml --suite synthetic --only mmoe,home
    python -m pipelines.bench.quality configs/demo.yaml --suite synthetic \
        --only mmoe_numeric_ple,mmoe_numeric_periodic evaluate.calibration=temperature

Prints a table and writes the raw numbers, with the table as Markdown, to ``--json``
(``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import mlflow

from pipelines.bench.harness import bench_parser, format_table, parse, print_table, run_bench, write_results
from pipelines.jobs.train import train
from recmtl.config import load_config

_BACKBONES = {
    "shared_bottom": ["model.arch=shared_bottom"],
    "mmoe": [],
    "mmoe_dselect_k": ["model.gate=dselect_k", "model.dselect_k=2"],
    "ple": ["model.arch=ple", "model.task_experts=2", "model.num_experts=4"],
    "adatt": ["model.arch=adatt", "model.task_experts=2", "model.num_experts=2"],
    # Dense floats as embeddings (issue #16 item 3; configs/models/numeric_*.yaml).
    "mmoe_numeric_ple": ["model.numeric_encoding=piecewise_linear", "model.numeric_bins=16",
                         "model.numeric_dim=8"],
    "mmoe_numeric_periodic": ["model.numeric_encoding=periodic", "model.numeric_dim=8"],
}
_HOME_CENSUS = ["model.arch=home", "model.num_experts=4", "model.group_experts=0",
                "model.task_experts=2", "model.task_groups=[[income], [marital]]"]
SUITES: dict[str, dict[str, list[str]]] = {
    # Two unrelated tasks: HoME gets one group per task.
    "census": _BACKBONES | {
        # Two unrelated tasks: one group per task. On these 60k training rows HoME's
        # BatchNorm experts overfit income (test AUC 0.929, valid AUC falling from epoch 2),
        # so the main entry turns expert_norm off and the ablations show each switch.
        "home": [*_HOME_CENSUS, "model.expert_norm=false"],
        "home_expert_norm": _HOME_CENSUS,
        "home_no_feature_gate": [*_HOME_CENSUS, "model.expert_norm=false", "model.feature_gate=false"],
        "home_no_self_gate": [*_HOME_CENSUS, "model.expert_norm=false", "model.self_gate=false"],
        "mmoe_uncertainty": ["loss.weighting=uncertainty"],
        "mmoe_pcgrad": ["loss.weighting=pcgrad"],
    },
    # The click -> conversion funnel with ESMM heads (the demo), plus the funnel-specific models.
    "synthetic": _BACKBONES | {
        "home": ["model.arch=home", "model.num_experts=2", "model.group_experts=1",
                 "model.task_experts=1", "model.task_groups=[[ctr], [cvr]]"],
        "mmoe_escm2_dr": ["tasks=[{name: ctr, label: click, oracle: p_click}, {name: cvr, "
                          "label: conversion, space: click, escm2: dr, loss_weight: 0.5, oracle: "
                          "p_conversion_given_click}, {name: ctcvr, label: conversion, "
                          "product_of: [ctr, cvr]}]"],
        "mmoe_aitm": ["tasks=[{name: ctr, label: click, oracle: p_click}, "
                      "{name: ctcvr, label: conversion}]", "model.transfer=aitm",
                      "loss.calibrator_weight=0.6"],
        # Top-2 of 8 experts per (task, sample) with the balance loss (configs/models/sparse_moe.yaml).
        "sparse_moe": ["model.arch=sparse_moe", "model.num_experts=8", "model.moe_top_k=2"],
        # Feature tokens and task tokens; attention in place of the dot interaction.
        "multitab": ["model.arch=multitab", "model.interaction=none"],
    },
}


def run_variant(config: str, name: str, overrides: list[str], extra: list[str]) -> dict[str, Any]:
    cfg = load_config(config, [*overrides, *extra, f"name=quality-{name}"])
    started = time.perf_counter()
    summary = train(cfg)
    report = json.loads(Path(summary["report"]).read_text())
    run = mlflow.tracking.MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"])
    return {
        "variant": name, "overrides": overrides, "run_id": summary["run_id"],
        "samples_per_s": run.data.metrics.get("train/epoch_samples_per_s"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "valid": {k: v for k, v in run.data.metrics.items() if k.startswith("valid/")},
        "tasks": {t: {k: m.get(k) for k in ("auc", "oracle_auc", "logloss", "gauc", "rows",
                                             "calibration", "ece")}
                  for t, m in report["tasks"].items()},
    }


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row per variant: test AUC and logloss per task, samples/s; then the oracle's AUCs."""
    tasks = list(dict.fromkeys(t for r in results for t in r["tasks"]))  # variants may differ
    rows = [{"variant": r["variant"]}
            | {f"{t} AUC": r["tasks"].get(t, {}).get("auc") for t in tasks}
            | {f"{t} logloss": r["tasks"].get(t, {}).get("logloss") for t in tasks}
            | {"samples/s": r["samples_per_s"] or None} for r in results]
    oracle = {t: next((r["tasks"][t]["oracle_auc"] for r in results if t in r["tasks"]), None)
              for t in tasks}
    if any(v is not None for v in oracle.values()):
        rows.append({"variant": "oracle"} | {f"{t} AUC": oracle[t] for t in tasks})
    return rows


def formats(rows: list[dict[str, Any]]) -> dict[str, str]:
    """AUC and logloss to 4 decimals, samples/s whole."""
    return {c: ",.0f" if c == "samples/s" else ".4f" for row in rows for c in row}


def table(results: list[dict[str, Any]]) -> str:
    """The rows as Markdown, for the docs."""
    rows = table_rows(results)
    return format_table(rows, formats(rows), markdown=True)


def bench_quality(args: argparse.Namespace) -> list[dict[str, Any]]:
    suite = SUITES[args.suite]
    names = args.only.split(",") if args.only else list(suite)
    results: list[dict[str, Any]] = []
    for n in names:  # written after every variant: a crash keeps what was measured
        results.append(run_variant(args.config, n, suite[n], args.overrides))
        print(f"{n}: trained in {results[-1]['wall_seconds']:.0f} s", flush=True)
        write_results(args, {"config": args.config, "variants": results, "table": table(results)})
    rows = table_rows(results)
    print_table(rows, formats(rows))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("quality", __doc__, config="required", json_default="runs/quality.json",
                          out_alias=True)
    parser.add_argument("--suite", choices=sorted(SUITES), required=True)
    parser.add_argument("--only", help="comma-separated variants (default: the whole suite)")
    args = parse(parser, argv)
    return run_bench(lambda: bench_quality(args))


if __name__ == "__main__":
    sys.exit(main())
