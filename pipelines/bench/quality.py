"""Model quality of every architecture on one data set: test AUC, logloss and training
samples/s per task, each variant a real `recmtl train` run (Ray, MLflow, report, export).

    python -m pipelines.bench.quality data/census/census.yaml --suite census
    python -m pipelines.bench.quality configs/demo.yaml --suite synthetic --only mmoe,home
    python -m pipelines.bench.quality configs/demo.yaml --suite synthetic \
        --only mmoe_numeric_ple,mmoe_numeric_periodic evaluate.calibration=temperature

Prints a Markdown table and writes it with the raw numbers to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import mlflow

from pipelines.jobs.train import train
from recmtl.config import load_config
from recmtl.logs import quiet_third_party

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


def table(results: list[dict[str, Any]]) -> str:
    tasks = list(dict.fromkeys(t for r in results for t in r["tasks"]))  # variants may differ
    head = ["variant", *[f"{t} AUC" for t in tasks], *[f"{t} logloss" for t in tasks],
            "samples/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        cells = [r["variant"]]
        cells += [_f(r["tasks"].get(t, {}).get("auc")) for t in tasks]
        cells += [_f(r["tasks"].get(t, {}).get("logloss")) for t in tasks]
        cells.append(f"{r['samples_per_s']:,.0f}" if r["samples_per_s"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    oracle = {t: next((r["tasks"][t]["oracle_auc"] for r in results if t in r["tasks"]), None)
              for t in tasks}
    if any(v is not None for v in oracle.values()):
        lines.append("| oracle | " + " | ".join(_f(oracle[t]) for t in tasks)
                     + " |" + " |" * (len(tasks) + 1))
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--suite", choices=sorted(SUITES), required=True)
    parser.add_argument("--only", help="comma-separated variants (default: the whole suite)")
    parser.add_argument("--out", default="runs/quality.json")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for every variant")
    args = parser.parse_intermixed_args()
    quiet_third_party()
    suite = SUITES[args.suite]
    names = args.only.split(",") if args.only else list(suite)
    results: list[dict[str, Any]] = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for n in names:  # written after every variant: a crash keeps what was measured
        results.append(run_variant(args.config, n, suite[n], args.overrides))
        Path(args.out).write_text(json.dumps({"config": args.config, "results": results,
                                              "table": table(results)}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
