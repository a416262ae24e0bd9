"""Serving latency of a bundle: p50/p99 per request at batch 1, 64 and 512 on this CPU.

    python -m pipelines.bench.serving --bundle runs/demo-.../export --data data/demo/test

A request = raw Arrow rows -> id lookup + pooling -> dense program -> scores, timed end to end
for every backend the bundle has. The backends take turns request by request on the same
requests; beside torch's, each other's latency over torch's on the same request (median over
the requests). Rows come from ``--data`` (default: the demo's test split).
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import torch

from pipelines.bench.harness import (
    bench_parser,
    interleave,
    parse,
    print_table,
    run_bench,
    timed,
    write_results,
)
from recmtl.export.scorer import BACKENDS, BundleScorer

WARMUP = 20  # requests per backend and batch size that are not counted


def _scoring(scorer: BundleScorer, requests: list[pa.Table]) -> Callable[[], object]:
    """Scores the next of ``requests`` at each call: every backend gets the same requests."""
    pending = iter(requests)
    return lambda: scorer.score_rows(next(pending))


def bench_serving(bundle: str | Path, data: str | Path, batches: tuple[int, ...] = (1, 64, 512),
                  requests: int = 300, threads: int | None = None) -> dict[str, Any]:
    """Per batch size, the backends take turns request by request (the first, torch, is the
    baseline of the per-request latency ratio)."""
    if threads:
        torch.set_num_threads(threads)
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    files = set(manifest["files"])
    backends = [b for b in BACKENDS
                if {"torch": "dense.pt2", "onnx": "dense.onnx", "aoti": "dense.aoti.pt2"}[b] in files]
    rows = ds.dataset(str(data), format="parquet").head(max(batches) * 8)
    results: dict[str, Any] = {"cpu": platform.processor() or platform.machine(),
                               "torch_threads": torch.get_num_threads(), "latency_ms": {}}
    rng = np.random.default_rng(0)
    scorers = {backend: BundleScorer(bundle, backend) for backend in backends}
    table: list[dict[str, Any]] = []
    for b in batches:
        starts = rng.integers(0, rows.num_rows - b + 1, size=requests + WARMUP)
        chosen = [rows.slice(int(start), b) for start in starts]
        turns = interleave({name: timed(_scoring(scorer, chosen)) for name, scorer in scorers.items()},
                           backends[0], repeats=requests, warmup=WARMUP)
        for backend in backends:
            p50, p99 = np.percentile([t * 1000 for t in turns.runs[backend]], [50, 99])
            cell = results["latency_ms"][f"{backend}/batch{b}"] = {"p50": round(float(p50), 3),
                                                                   "p99": round(float(p99), 3)}
            row = {"backend": backend, "batch": b, "p50 ms": float(p50), "p99 ms": float(p99),
                   "rows/s at p50": b / p50 * 1000}
            if backend != turns.baseline:
                cell[f"vs_{turns.baseline}"] = row[f"x {turns.baseline}"] = round(turns.ratio(backend), 3)
            table.append(row)
    print_table(table, {"p50 ms": ".3f", "p99 ms": ".3f", "rows/s at p50": ",.0f",
                        f"x {backends[0]}": ".2f"})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("serving", __doc__)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, help="Parquet rows to score")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parse(parser, argv)
    return run_bench(lambda: write_results(
        args, bench_serving(args.bundle, args.data, requests=args.requests, threads=args.threads)))


if __name__ == "__main__":
    sys.exit(main())
