"""Architectures against MMoE in the same run (issue #18): one epoch each on several stores,
test AUC and logloss per task (in its sample space), training samples/s; then what a sparse
MoE with k of E experts costs beside running all E.

    python -m pipelines.bench.architectures [--archs mmoe,sparse_moe,multitab]
        [--datasets funnel,sequences,census,multitask-low,multitask-high] [--rows 200000]

Each (data set, architecture) trains in this process as a 1-rank job (torchrec DMP on gloo,
the real ``run_epoch``; no Ray, MLflow or export), so the numbers are the model's, not the
job's. The stores are generated (census: prepared from ../shared) under ``--work``; every
architecture keeps its store's config, the dot interaction included. The default
architectures are mmoe, sparse_moe and multitab, plus dtrn and infnet where ``model.arch``
offers them; on request
``sparse_moe_sample`` (sample routing), ``mmoe_rmtl`` (MMoE with ``loss.weighting: rmtl``)
and ``single_task`` (one MMoE per task that trains alone: the baseline of negative
transfer). ``name@key=value...`` runs a variant. A cell's delta is against MMoE on the same
store in the same run; ``!`` marks a task more than 0.002 AUC behind it. Prints the table and
writes JSON to ``--json`` (``--out``), the table as Markdown in it.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipelines.bench.harness import (
    bench_parser,
    format_table,
    interleave,
    parse,
    print_table,
    run_bench,
    write_results,
)
from pipelines.feature_store import census
from pipelines.synthetic.store import generate
from recmtl.config import ARCHITECTURES, Config, derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.metrics.auc import auc, logloss
from recmtl.models.builder import build_model
from recmtl.modules.sparse_moe import TaskSparseMoE
from recmtl.predict import predict
from recmtl.train.loop import StepPlan, run_epoch
from recmtl.train.sharding import shard_model
from recmtl.train.worker import numeric_edges, train_readers

# The cost line's k of E: as many experts per (task, sample) as demo.yaml's MMoE, from 4x as
# many. In the table, k is the store's MMoE expert count and E = 4 k (sparse_sizes).
SPARSE_K, SPARSE_E = 4, 16
ARCHS: dict[str, list[str]] = {
    "mmoe": [],
    "sparse_moe": ["model.arch=sparse_moe", "model.moe_routing=task"],
    "sparse_moe_sample": ["model.arch=sparse_moe", "model.moe_routing=sample"],
    "multitab": ["model.arch=multitab"],
    "dtrn": ["model.arch=dtrn"],
    # The library's sizes: smoke.yaml (the funnel's config) shrinks infnet for the tests.
    "infnet": ["model.arch=infnet", "model.infnet.dim=32", "model.infnet.num_layers=2",
               "model.infnet.num_heads=4", "model.infnet.num_proxies=4",
               "model.infnet.pgu_hidden=64"],
    "mmoe_rmtl": ["loss.weighting=rmtl"],
    "single_task": [],  # one MMoE per task, trained on that task alone: train_single
}
DEFAULT_ARCHS = ["mmoe", "sparse_moe", "multitab",
                 *(a for a in ("dtrn", "infnet") if a in ARCHITECTURES)]
CENSUS_CSV = Path(census.DEFAULT_SRC)
DATASETS = {  # name: config (census: written by the preparation)
    "funnel": "configs/smoke.yaml",
    "sequences": "configs/sequences/din.yaml",
    "census": "census.yaml",
    "multitask-low": "configs/multitask/low_correlation.yaml",
    "multitask-high": "configs/multitask/high_correlation.yaml",
}
DEFAULT_DATASETS = [d for d in DATASETS if d != "census" or CENSUS_CSV.is_file()]
TOLERANCE = 0.002


def sparse_sizes(cfg: Config) -> list[str]:
    """k of E for a sparse MoE beside ``cfg``'s MMoE: as many experts per (task, sample) as
    that MMoE runs (its ``num_experts``), chosen from 4x as many."""
    k = cfg.model.num_experts
    return [f"model.num_experts={4 * k}", f"model.moe_top_k={k}"]


def arch_overrides(arch: str) -> list[str]:
    """``name[@key=value...]``: the architecture's overrides, then the extra ones (a variant,
    e.g. ``sparse_moe@model.moe_top_k=4``).

    Example:
        >>> arch_overrides("mmoe@model.num_experts=8@train.dense_lr=0.003")
        ['model.num_experts=8', 'train.dense_lr=0.003']
    """
    name, *extra = arch.split("@")
    return [*ARCHS[name], *extra]


def store(name: str, work: Path, rows: int) -> tuple[str, list[str]]:
    """Writes data set ``name`` under ``work``; returns its config and the overrides to read it."""
    root = work / name
    if name == "census":
        census.prepare(CENSUS_CSV, root)
        return str(root / "census.yaml"), ["train.epochs=1"]
    sizes = [f"data.root={root}", f"synthetic.train_rows={rows}",
             f"synthetic.valid_rows={rows // 6}", f"synthetic.test_rows={rows // 6}",
             f"synthetic.rows_per_file={rows}", "synthetic.row_group_size=5000",
             "data.batch_size=512"]
    generate(load_config(DATASETS[name], sizes))
    return DATASETS[name], sizes


def train_one(cfg: Config) -> dict[str, Any]:
    """One epoch of ``cfg`` on this rank alone, then the test split: samples/s and, per binary
    task in its sample space, AUC, logloss and the oracle's AUC."""
    device = torch.device("cpu")
    model = build_model(cfg, embedding_device="meta", numeric_edges=numeric_edges(cfg))
    dmp, optimizer, _ = shard_model(model, cfg.train, device, tables=cfg.features.tables)
    reader, _ = train_readers(cfg, 0, 1)
    stats = run_epoch(dmp, optimizer, reader.epoch(0), StepPlan.from_config(cfg, device),
                      reader.num_batches)
    test = ParquetBatchReader(f"{cfg.data.root.rstrip('/')}/test",
                              FeatureSchema.from_config(cfg, with_extras=True),
                              cfg.data.eval_batch_size)
    cols = predict(dmp, test.epoch(0), cfg.tasks, device)
    tasks = {}
    for t in cfg.tasks:
        if t.kind != "binary":
            continue
        keep = cols[t.space] > 0.5 if t.space else np.ones(len(cols[t.label]), dtype=bool)
        y, p = cols[t.label][keep], cols[f"pred/{t.name}"][keep]
        tasks[t.name] = {"auc": auc(y, p), "logloss": logloss(y, p),
                         "oracle_auc": auc(y, cols[t.oracle][keep]) if t.oracle else None}
    return {"samples_per_s": stats.steady_rows / max(stats.steady_seconds, 1e-9),
            "rows": stats.rows, "tasks": tasks}


def train_single(cfg: Config) -> dict[str, Any]:
    """One model per binary task that stands alone (no ``space``, no ``product_of``), trained
    on that task only (loss weight 1): the single-task baselines that negative transfer is
    measured against. samples/s: of the T trainings together."""
    alone = [t for t in cfg.tasks if t.kind == "binary" and not t.space and not t.product_of]
    if not alone:
        raise ValueError("no task here trains alone (all are in a space or a product)")
    tasks: dict[str, Any] = {}
    seconds = rows = 0.0
    for task in alone:
        r = train_one(derive(cfg, {"tasks": [dataclasses.asdict(task) | {"loss_weight": 1.0}]}))
        tasks |= r["tasks"]
        seconds += r["rows"] / r["samples_per_s"]
        rows = r["rows"]
    return {"samples_per_s": rows / seconds, "rows": rows, "tasks": tasks}


COST_EXPERT_LAYERS = [128, 64]  # demo.yaml's experts (the funnel's smoke.yaml has toy ones)


def backbone_cost(cfg: Config, top_k: int, routing: str, rows: int, reps: int = 20) -> float:
    """Seconds per forward + backward of the sparse MoE backbone alone (``top_k`` of
    ``SPARSE_E`` experts of ``COST_EXPERT_LAYERS``; ``top_k=0``: all of them, evaluated
    densely as MMoE does) on ``rows`` rows of the backbone input of ``cfg``'s first training
    batch (repeated)."""
    model = build_model(derive(cfg, {"model.arch": "sparse_moe", "model.num_experts": SPARSE_E,
                                    "model.moe_top_k": top_k or SPARSE_E,
                                    "model.moe_routing": routing,
                                    "model.expert_layers": COST_EXPERT_LAYERS}))
    backbone = model.dense_ranker.backbone
    assert isinstance(backbone, TaskSparseMoE)
    backbone.sparse_dispatch = top_k > 0
    captured: list[torch.Tensor] = []
    handle = backbone.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    batch = next(iter(train_readers(cfg, 0, 1)[0].epoch(0)))
    with torch.no_grad():
        model(batch.dense, batch.sparse)
    handle.remove()
    x = captured[0].repeat(-(-rows // len(captured[0])), 1)[:rows].requires_grad_(True)
    times = []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        out = backbone(x)
        (out if isinstance(out, torch.Tensor) else torch.stack(list(out))).sum().backward()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


COST_VARIANTS = {"sample": (SPARSE_K, "sample"), "task": (SPARSE_K, "task"), "dense": (0, "sample")}


def sparse_cost(config: str, overrides: list[str], repeats: int = 3) -> dict[str, Any]:
    """Sparse MoE, k of E experts, against the same E experts run densely: the backbone's own
    step time (both routings, at the training batch and at 4096 rows; ``repeats`` rounds of
    the three in turns, ratios per round), and one epoch's training samples/s against MMoE
    with the same E experts; beside k / E."""
    sparse = load_config(config, [*overrides, *ARCHS["sparse_moe"],
                                  f"model.num_experts={SPARSE_E}", f"model.moe_top_k={SPARSE_K}"])
    dense = load_config(config, [*overrides, f"model.num_experts={SPARSE_E}"])
    trained = interleave({"sparse": lambda: train_one(sparse)["samples_per_s"],
                          "dense": lambda: train_one(dense)["samples_per_s"]}, "dense", 1)
    backbone: dict[int, dict[str, Any]] = {}
    for rows in (sparse.data.batch_size, 4096):
        # in turns, so a busy moment of the machine hits every variant
        backbone[rows] = interleave({v: partial(backbone_cost, sparse, k, routing, rows)
                                     for v, (k, routing) in COST_VARIANTS.items()},
                                    "dense", repeats).summary()
    return {"k": SPARSE_K, "experts": SPARSE_E, "k_over_e": SPARSE_K / SPARSE_E,
            "train_samples_per_s": {v: trained.median(v) for v in trained.runs},
            "train_cost_ratio": 1 / trained.ratio("sparse"),
            "backbone_step_s": {rows: {v: t["median"] for v, t in b.items()}
                                for rows, b in backbone.items()},
            "backbone_cost_ratio": {rows: {v: b[v]["ratio"] for v in ("sample", "task")}
                                    for rows, b in backbone.items()},
            "backbone_rounds": backbone}


def print_sparse_cost(c: dict[str, Any]) -> None:
    print(f"sparse_moe, {c['k']} of {c['experts']} experts of {COST_EXPERT_LAYERS} (k/E = "
          f"{c['k_over_e']:.2f}), backbone step against all {c['experts']} run densely:")
    names = {"sample": "sample routing", "task": "task routing", "dense": "dense (all experts)"}
    print_table([{"rows": rows, "backbone": names[v], "step ms": t[v] * 1e3,
                  "x dense": c["backbone_cost_ratio"][rows].get(v)}
                 for rows, t in c["backbone_step_s"].items() for v in names],
                {"step ms": ".2f", "x dense": ".2f"})
    print(f"training: {c['train_samples_per_s']['sparse']:,.0f} samples/s vs MMoE with "
          f"{c['experts']} experts {c['train_samples_per_s']['dense']:,.0f} (cost ratio "
          f"{c['train_cost_ratio']:.2f})")


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per (data set, architecture), deltas against MMoE on the same store; then the
    oracle's AUCs per store."""
    def row(r: dict[str, Any], *cells: str) -> dict[str, str]:
        heads = ("AUC per task (vs MMoE)", "logloss per task", "samples/s (x MMoE)")
        # a failed or oracle row fills the first cell only; the table leaves the rest blank
        return ({"data set": r["dataset"], "architecture": r["arch"]}
                | dict(zip(heads, cells, strict=False)))

    rows = []
    for r in results:
        base = next((b for b in results if b["dataset"] == r["dataset"]
                     and b["arch"] == "mmoe" and "tasks" in b), None)
        if "error" in r:
            rows.append(row(r, f"failed: {r['error']}"))
            continue
        aucs, losses = [], []
        for t, m in r["tasks"].items():
            cell = f"{t} {m['auc']:.4f}"
            if base is not None and r["arch"] != "mmoe" and t in base["tasks"]:
                delta = m["auc"] - base["tasks"][t]["auc"]
                cell += f" ({delta:+.4f}{' !' if delta < -TOLERANCE else ''})"
            aucs.append(cell)
            losses.append(f"{t} {m['logloss']:.4f}")
        speed = f"{r['samples_per_s']:,.0f}"
        if base is not None and r["arch"] != "mmoe":
            speed += f" ({r['samples_per_s'] / base['samples_per_s']:.2f})"
        rows.append(row(r, "; ".join(aucs), "; ".join(losses), speed))
    for r in results:
        oracle = {t: m["oracle_auc"] for t, m in r.get("tasks", {}).items() if m.get("oracle_auc")}
        if r["arch"] == "mmoe" and oracle:
            rows.append(row(r | {"arch": "oracle"},
                            "; ".join(f"{t} {v:.4f}" for t, v in oracle.items())))
    return rows


def table(results: list[dict[str, Any]]) -> str:
    """The rows as Markdown, for the docs."""
    return format_table(table_rows(results), markdown=True)


def bench(archs: list[str], datasets: list[str], rows: int, work: Path, cost: bool,
          save: Callable[[dict[str, Any]], object], repeats: int = 3) -> dict[str, Any]:
    """Every (data set, architecture); ``save`` gets the summary after each (a crash keeps
    what was measured). ``repeats``: rounds of the sparse cost's backbone timings."""
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"archs": archs, "datasets": datasets, "rows": rows,
                               "results": results}
    funnel: tuple[str, list[str]] | None = None
    for name in datasets:
        config, overrides = store(name, work, rows)
        funnel = (config, overrides) if name == "funnel" else funnel
        sized = sparse_sizes(load_config(config, overrides))  # once per store
        for arch in archs:
            t0 = time.perf_counter()
            try:
                base = arch.split("@")[0]
                extra = sized if base.startswith("sparse_moe") else []
                run = train_single if base == "single_task" else train_one
                r = run(load_config(config, [*overrides, *extra, *arch_overrides(arch)]))
            except Exception as e:  # noqa: BLE001 - one architecture failing on one store is a result
                r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            results.append({"dataset": name, "arch": arch,
                            "wall_s": round(time.perf_counter() - t0, 1)} | r)
            print(f"{name} {arch}: " + ("failed" if "error" in r else "trained")
                  + f" in {results[-1]['wall_s']:.0f} s", flush=True)
            save(summary)
    if cost and funnel is not None:
        summary["sparse_cost"] = sparse_cost(*funnel, repeats=repeats)
    summary["table"] = table(results)
    save(summary)
    print_table(table_rows(results))
    if summary.get("sparse_cost"):
        print_sparse_cost(summary["sparse_cost"])
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("architectures", __doc__, json_default="runs/architectures.json",
                          out_alias=True, repeats=3,
                          repeats_help="rounds of the sparse cost's backbone timings")
    parser.add_argument("--archs", default=",".join(DEFAULT_ARCHS),
                        help=f"comma-separated, of {sorted(ARCHS)}, each optionally followed by "
                             "@key=value overrides (a variant)")
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                        help=f"comma-separated, of {list(DATASETS)}")
    parser.add_argument("--rows", type=int, default=200000,
                        help="train rows of each synthetic store")
    parser.add_argument("--work", default="runs/bench-architectures", help="where the stores go")
    parser.add_argument("--no-cost", action="store_true", help="skip the sparse-vs-dense line")
    args = parse(parser, argv)
    archs, datasets = args.archs.split(","), args.datasets.split(",")
    unknown = ([a for a in archs if a.split("@")[0] not in ARCHS]
               + [d for d in datasets if d not in DATASETS])
    if unknown:
        parser.error(f"unknown architecture or data set: {unknown}")
    if "mmoe" not in archs:
        archs.insert(0, "mmoe")  # the baseline of every delta

    def run() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
            try:
                return bench(archs, datasets, args.rows, Path(args.work), not args.no_cost,
                             partial(write_results, args), args.repeats)
            finally:
                dist.destroy_process_group()

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
