"""Serving latency of a bundle: p50/p99 per request at batch 1, 64 and 512 on this CPU.

    python -m pipelines.bench.serving --bundle runs/demo-.../export --data data/demo/test

A request = raw Arrow rows -> id lookup + pooling -> dense program -> scores, timed end to end
for every backend the bundle has. Rows come from ``--data`` (default: the demo's test split).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds
import torch

from pipelines.cli import run_guarded
from recmtl.export.scorer import BACKENDS, BundleScorer


def bench_serving(bundle: str | Path, data: str | Path, batches: tuple[int, ...] = (1, 64, 512),
                  requests: int = 300, threads: int | None = None) -> dict[str, Any]:
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
    for backend in backends:
        scorer = BundleScorer(bundle, backend)
        for b in batches:
            starts = rng.integers(0, rows.num_rows - b + 1, size=requests + 20)
            times = []
            for i, start in enumerate(starts):
                request = rows.slice(int(start), b)
                t0 = time.perf_counter()
                scorer.score_rows(request)
                if i >= 20:  # warm-up requests are not counted
                    times.append((time.perf_counter() - t0) * 1000)
            p50, p99 = np.percentile(times, [50, 99])
            results["latency_ms"][f"{backend}/batch{b}"] = {"p50": round(float(p50), 3),
                                                           "p99": round(float(p99), 3)}
            print(f"{backend:6s} batch {b:4d}: p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  "
                  f"({b / p50 * 1000:,.0f} rows/s at p50)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.serving",
                                     description="p50/p99 latency of a bundle at batch 1, 64, 512")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, help="Parquet rows to score")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    def run() -> None:
        results = bench_serving(args.bundle, args.data, requests=args.requests,
                                threads=args.threads)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))

    return run_guarded(run, prog="bench")


if __name__ == "__main__":
    sys.exit(main())
