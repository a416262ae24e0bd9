"""Does ``torch.compile`` pay for the dense part? Trains the dense ranker (interaction,
backbone, towers, heads) on pooled embeddings of real batches, eager and compiled, same
batches and seed, and prints samples/s of each (after warm-up) and the compile time.

    python -m pipelines.bench.compile configs/bench/standard.yaml [dotted.key=value ...] [--steps 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import islice

import torch

from pipelines.cli import run_guarded
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.compile")
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)

    def compare_modes() -> None:
        cfg = load_config(args.config, args.overrides)
        for mode in ("eager", "default", "eager"):  # eager twice: the machine's drift shows
            r = run(cfg, args.steps, mode)
            print(f"{mode:8s} {r['samples_per_s']:>10,.0f} samples/s "
                  f"(first {WARMUP} steps {r['warmup_s']:.1f}s)", flush=True)

    return run_guarded(compare_modes, prog="bench")


if __name__ == "__main__":
    sys.exit(main())
