"""Does ``torch.compile`` pay for the dense part? Trains the dense ranker (interaction,
backbone, towers, heads) on pooled embeddings of real batches, eager and compiled, same
batches and seed, and prints samples/s of each (after warm-up) and the compile time.

    python -m pipelines.bench.compile configs/bench/standard.yaml [--steps 40]
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

import torch

from recmtl.config import load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.losses import multitask_loss
from recmtl.models.builder import build_model


def run(cfg_path: str, steps: int, mode: str) -> dict[str, float]:
    cfg = load_config(cfg_path)
    model = build_model(cfg)
    reader = ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg),
                                cfg.data.batch_size)
    with torch.no_grad():
        inputs = [(model.pooled(b.sparse), b.dense, b.labels)
                  for b in islice(reader.epoch(0), steps + 5)]
    dense = model.dense_ranker
    step_fn = torch.compile(dense, mode=None if mode == "default" else mode) \
        if mode != "eager" else dense
    opt = torch.optim.Adam(dense.parameters(), lr=cfg.train.dense_lr)
    t0 = time.perf_counter()
    for i, (pooled, x, labels) in enumerate(inputs):
        if i == 5:
            warm = time.perf_counter() - t0
            start, rows = time.perf_counter(), 0
        loss, _ = multitask_loss(step_fn(pooled, x), labels, cfg.tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 5:
            rows += len(x)
    return {"samples_per_s": rows / (time.perf_counter() - start), "warmup_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    for mode in ("eager", "default", "eager"):  # eager twice: the machine's drift shows
        r = run(args.config, args.steps, mode)
        results.setdefault(mode, []).append(r)
        print(f"{mode:8s} {r['samples_per_s']:>10,.0f} samples/s (first 5 steps {r['warmup_s']:.1f}s)",
              flush=True)


if __name__ == "__main__":
    main()
