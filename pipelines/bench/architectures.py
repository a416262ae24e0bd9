"""Architectures against MMoE in the same run (issue #18): one epoch each on several stores,
test AUC and logloss per task (in its sample space), training samples/s; then what a sparse
MoE with k of E experts costs beside running all E.

    python -m pipelines.bench.architectures [--archs mmoe,sparse_moe,multitab]
        [--datasets funnel,sequences,census,multitask-low,multitask-high] [--rows 60000]

Each (data set, architecture) trains in this process as a 1-rank job (torchrec DMP on gloo,
the real ``run_epoch``; no Ray, MLflow or export), so the numbers are the model's, not the
job's. The stores are generated (census: prepared from ../shared) under ``--work``. The
default architectures are mmoe, sparse_moe and multitab, plus dtrn and infnet where
``model.arch`` offers them; ``mmoe_rmtl`` (MMoE with ``loss.weighting: rmtl``) on request.
A cell's delta is against MMoE on the same store in the same run; ``!`` marks a task more
than 0.002 AUC behind it. Prints a Markdown table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipelines.cli import run_guarded
from pipelines.feature_store import census
from pipelines.feature_store.synthetic import generate
from recmtl.config import ARCHITECTURES, Config, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.logs import quiet_third_party
from recmtl.metrics.auc import auc, logloss
from recmtl.models.builder import build_model
from recmtl.predict import predict
from recmtl.train.loop import StepPlan, run_epoch
from recmtl.train.sharding import shard_model
from recmtl.train.worker import numeric_edges, train_readers

SPARSE_K, SPARSE_E = 2, 8
ARCHS: dict[str, list[str]] = {
    "mmoe": [],
    "sparse_moe": ["model.arch=sparse_moe", f"model.num_experts={SPARSE_E}",
                   f"model.moe_top_k={SPARSE_K}"],
    "multitab": ["model.arch=multitab", "model.interaction=none"],
    "dtrn": ["model.arch=dtrn", "model.interaction=none"],
    "infnet": ["model.arch=infnet", "model.interaction=none"],
    "mmoe_rmtl": ["loss.weighting=rmtl"],
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


def backbone_cost(cfg: Config, experts: int, top_k: int, reps: int = 20) -> float:
    """Seconds per forward + backward of the sparse MoE backbone alone (k of E experts) on the
    input of one training batch of ``cfg``."""
    model = build_model(cfg.derive({"model.arch": "sparse_moe", "model.num_experts": experts,
                                    "model.moe_top_k": top_k}))
    backbone = model.dense_ranker.backbone
    captured: list[torch.Tensor] = []
    handle = backbone.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    batch = next(iter(train_readers(cfg, 0, 1)[0].epoch(0)))
    with torch.no_grad():
        model(batch.dense, batch.sparse)
    handle.remove()
    x = captured[0].requires_grad_(True)
    times = []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        out = backbone(x)
        (out if isinstance(out, torch.Tensor) else torch.stack(list(out))).sum().backward()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sparse_cost(config: str, overrides: list[str]) -> dict[str, Any]:
    """Sparse MoE k of E vs all E experts (dense): training samples/s of one epoch each, and
    the backbone's own step time, beside k / E."""
    sparse = load_config(config, [*overrides, *ARCHS["sparse_moe"]])
    dense = sparse.derive({"model.moe_top_k": SPARSE_E})
    trained = {"sparse": train_one(sparse)["samples_per_s"],
               "dense": train_one(dense)["samples_per_s"]}
    # interleaved, so a busy moment of the machine hits both
    step: dict[str, list[float]] = {"sparse": [], "dense": []}
    for _ in range(3):
        step["sparse"].append(backbone_cost(sparse, SPARSE_E, SPARSE_K))
        step["dense"].append(backbone_cost(sparse, SPARSE_E, SPARSE_E))
    backbone = {k: float(np.median(v)) for k, v in step.items()}
    return {"k": SPARSE_K, "experts": SPARSE_E, "k_over_e": SPARSE_K / SPARSE_E,
            "train_samples_per_s": trained,
            "train_cost_ratio": trained["dense"] / trained["sparse"],
            "backbone_step_s": backbone,
            "backbone_cost_ratio": backbone["sparse"] / backbone["dense"]}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| data set | architecture | AUC per task (vs MMoE) | logloss per task | samples/s "
             "(x MMoE) |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        base = next((b for b in results if b["dataset"] == r["dataset"]
                     and b["arch"] == "mmoe" and "tasks" in b), None)
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['arch']} | failed: {r['error']} | | |")
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
        lines.append(f"| {r['dataset']} | {r['arch']} | {'; '.join(aucs)} | {'; '.join(losses)} "
                     f"| {speed} |")
    oracle = [(r["dataset"], {t: m["oracle_auc"] for t, m in r["tasks"].items()
                              if m.get("oracle_auc")})
              for r in results if r["arch"] == "mmoe" and "tasks" in r]
    for dataset, o in oracle:
        if o:
            lines.append(f"| {dataset} | oracle | "
                         + "; ".join(f"{t} {v:.4f}" for t, v in o.items()) + " | | |")
    return "\n".join(lines)


def bench(archs: list[str], datasets: list[str], rows: int, work: Path, out: str,
          cost: bool) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"archs": archs, "datasets": datasets, "rows": rows,
                               "results": results}
    funnel: tuple[str, list[str]] | None = None
    for name in datasets:
        config, overrides = store(name, work, rows)
        funnel = (config, overrides) if name == "funnel" else funnel
        for arch in archs:
            t0 = time.perf_counter()
            try:
                r = train_one(load_config(config, [*overrides, *ARCHS[arch]]))
            except Exception as e:  # noqa: BLE001 - one architecture failing on one store is a result
                r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            results.append({"dataset": name, "arch": arch,
                            "wall_s": round(time.perf_counter() - t0, 1)} | r)
            print(f"{name} {arch}: " + (r["error"] if "error" in r else ", ".join(
                f"{t} {m['auc']:.4f}" for t, m in r["tasks"].items())
                + f", {r['samples_per_s']:,.0f} samples/s"), flush=True)
            _write(out, summary)
    if cost and funnel is not None:
        summary["sparse_cost"] = sparse_cost(*funnel)
    summary["table"] = table(results)
    _write(out, summary)
    print(summary["table"])
    c = summary.get("sparse_cost")
    if c:
        print(f"sparse_moe {c['k']} of {c['experts']} experts vs all {c['experts']} (k/E = "
              f"{c['k_over_e']:.2f}): backbone step {c['backbone_step_s']['sparse'] * 1e3:.1f} ms "
              f"vs {c['backbone_step_s']['dense'] * 1e3:.1f} ms (cost ratio "
              f"{c['backbone_cost_ratio']:.2f}); training "
              f"{c['train_samples_per_s']['sparse']:,.0f} vs "
              f"{c['train_samples_per_s']['dense']:,.0f} samples/s (cost ratio "
              f"{c['train_cost_ratio']:.2f})")
    return summary


def _write(out: str, summary: dict[str, Any]) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.architectures",
                                     description="architectures against MMoE, one epoch each")
    parser.add_argument("--archs", default=",".join(DEFAULT_ARCHS),
                        help=f"comma-separated, of {sorted(ARCHS)}")
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                        help=f"comma-separated, of {list(DATASETS)}")
    parser.add_argument("--rows", type=int, default=60000, help="train rows of each synthetic store")
    parser.add_argument("--work", default="runs/bench-architectures", help="where the stores go")
    parser.add_argument("--out", default="runs/architectures.json")
    parser.add_argument("--no-cost", action="store_true", help="skip the sparse-vs-dense line")
    args = parser.parse_args(argv)
    archs, datasets = args.archs.split(","), args.datasets.split(",")
    unknown = [a for a in archs if a not in ARCHS] + [d for d in datasets if d not in DATASETS]
    if unknown:
        parser.error(f"unknown architecture or data set: {unknown}")
    if "mmoe" not in archs:
        archs.insert(0, "mmoe")  # the baseline of every delta
    quiet_third_party()

    def run() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
            try:
                return bench(archs, datasets, args.rows, Path(args.work), args.out,
                             not args.no_cost)
            finally:
                dist.destroy_process_group()

    return run_guarded(run, prog="bench")


if __name__ == "__main__":
    sys.exit(main())
