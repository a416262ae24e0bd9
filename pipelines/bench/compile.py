"""Does ``torch.compile`` pay for the dense part? Trains the dense ranker (interaction,
backbone, towers, heads) on pooled embeddings of real batches, eager and compiled, same
batches and seed, taking turns (``--repeats`` rounds of eager then compiled), and prints the
median samples/s of each (after warm-up), compiled / eager per round and the first steps' time
(where compilation happens).

    python -m pipelines.bench.compile configs/bench/standard.yaml [dotted.key=value ...] [--steps 40]
        [--repeats 2]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from itertools import islice
from typing import Any

import torch

from pipelines.bench.harness import bench_parser, interleave, parse, print_table, run_bench, write_results
from recmtl.config import Config, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.errors import RecmtlError
from recmtl.losses import multitask_loss
from recmtl.models.builder import build_model

WARMUP = 5


def run(cfg: Config, steps: int, mode: str) -> dict[str, float]:
    model = build_model(cfg)
    reader = ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg),
                                cfg.data.batch_size)
    with torch.no_grad():
        inputs = [(model.pooled(b.sparse), b.dense, b.labels)
                  for b in islice(reader.epoch(0), steps + WARMUP)]
    if len(inputs) <= WARMUP:
        raise RecmtlError(f"{cfg.data.root}/train holds {len(inputs)} batch(es) of "
                          f"{cfg.data.batch_size}; the benchmark needs more than {WARMUP}")
    dense = model.dense_ranker
    step_fn = torch.compile(dense, mode=None if mode == "default" else mode) \
        if mode != "eager" else dense
    opt = torch.optim.Adam(dense.parameters(), lr=cfg.train.dense_lr)
    t0 = time.perf_counter()
    for i, (pooled, x, labels) in enumerate(inputs):
        if i == WARMUP:
            warm = time.perf_counter() - t0
            start, rows = time.perf_counter(), 0
        loss, _ = multitask_loss(step_fn(pooled, x), labels, cfg.tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= WARMUP:
            rows += len(x)
    return {"samples_per_s": rows / (time.perf_counter() - start), "warmup_s": warm}


def compare_modes(cfg: Config, steps: int, repeats: int) -> dict[str, Any]:
    """Eager and compiled in turns; samples/s of each run and its first steps' seconds."""
    warmup: dict[str, list[float]] = {"eager": [], "compiled": []}

    def mode(name: str, compile_mode: str) -> Callable[[], float]:
        def samples_per_s() -> float:
            r = run(cfg, steps, compile_mode)
            warmup[name].append(r["warmup_s"])
            return r["samples_per_s"]
        return samples_per_s

    turns = interleave({"eager": mode("eager", "eager"), "compiled": mode("compiled", "default")},
                       "eager", repeats)
    print_table([{"mode": name, "samples/s": turns.median(name),
                  "x eager": turns.ratio(name) if name != "eager" else None,
                  f"first {WARMUP} steps s": max(warmup[name])} for name in turns.runs],
                {"samples/s": ",.0f", "x eager": ".2f", f"first {WARMUP} steps s": ".2f"})
    return {"steps": steps, "samples_per_s": turns.summary(), "warmup_s": warmup}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("compile", __doc__, config="required", repeats=2,
                          repeats_help="rounds of eager then compiled")
    parser.add_argument("--steps", type=int, default=40)
    args = parse(parser, argv)
    return run_bench(lambda: write_results(args, compare_modes(
        load_config(args.config, args.overrides), args.steps, args.repeats)))


if __name__ == "__main__":
    sys.exit(main())
