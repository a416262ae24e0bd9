"""Training throughput and where the time goes, on this machine.

    python -m pipelines.bench.training CONFIG [dotted.key=value ...] [--steps 60] [--ray-workers 2]
        [--ranks 2] [--data-repeats 5]


Prints and writes JSON (``runs/bench-<name>-<time>.json``) of:
- the data path: Parquet -> ``Batch`` rows/s beside two references on the same columns: a
  plain pyarrow record-batch loop into torch tensors, and the decode floor (whole row groups
  to numpy, nothing else);
- training samples/s on 1 and 2 processes without Ray (as torchrun; torchrec DMP on gloo, the
  real loop, ``bench_ranks``): step breakdown, the share spent in communication, sharded
  checkpoint save and restore times; and the pure-PyTorch baseline (``bench_baseline``) in the
  same run, so the ratio survives a noisy machine;
- single-process samples/s with ``train.bf16`` too, where the CPU has bfloat16 dot products
  (or on CUDA), beside float32 in the same run;
- training samples/s on N Ray workers (the real job, with validation and checkpoint);
- peak memory, versions, CPU model, threads. On CUDA (``train.device=cuda``) the same runs use
  the GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipelines.bench.baseline import bench_baseline
from pipelines.bench.ranks import bench_ranks
from pipelines.cli import run_guarded
from recmtl.config import Config, derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.logs import quiet_third_party
from recmtl.train.launch import absolute_data_root, fit
from recmtl.train.worker import train_readers


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """bfloat16 dot products in hardware (AVX512-BF16 or AMX): where ``train.bf16`` pays on CPU."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def raw_decode_rows_per_s(reader: ParquetBatchReader) -> float:
    """Reads every row group's columns and turns them into numpy arrays: the floor of any
    Parquet reader, with no validation, batching or tensors."""
    columns = reader.schema.columns
    lists = {s.name for s in reader.schema.sparse if s.multi_valued}
    rows, start = 0, time.perf_counter()
    files: dict[str, pq.ParquetFile] = {}
    for rg in reader.row_groups:
        f = files.setdefault(rg.path, pq.ParquetFile(reader.fs.open_input_file(rg.path)))
        table = f.read_row_group(rg.index, columns=columns)
        for name in columns:
            col = table.column(name)
            if name in lists:
                col = col.combine_chunks()
                pc.list_value_length(col).to_numpy(zero_copy_only=False)
                col.flatten().to_numpy()
            else:
                col.to_numpy()
        rows += table.num_rows
    return rows / (time.perf_counter() - start)


def record_batch_loop_rows_per_s(reader: ParquetBatchReader) -> float:
    """The plain pyarrow loop a user would write: ``iter_batches`` of ``batch_size`` rows,
    each column into a torch tensor (lists as values + lengths); no validation, no KJT."""
    columns = reader.schema.columns
    lists = {s.name for s in reader.schema.sparse if s.multi_valued}
    rows, start = 0, time.perf_counter()
    for path in sorted({rg.path for rg in reader.row_groups}):
        f = pq.ParquetFile(reader.fs.open_input_file(path))
        for batch in f.iter_batches(batch_size=reader.batch_size, columns=columns):
            for name in columns:
                col = batch.column(name)
                if name in lists:
                    torch.from_numpy(pc.list_value_length(col).to_numpy(zero_copy_only=False))
                    torch.from_numpy(col.flatten().to_numpy())
                else:
                    torch.from_numpy(col.to_numpy())
            rows += batch.num_rows
    return rows / (time.perf_counter() - start)


def reader_rows_per_s(reader: ParquetBatchReader) -> float:
    rows, start = 0, time.perf_counter()
    for batch in reader.epoch(0):
        rows += batch.size
    return rows / (time.perf_counter() - start)


def bench_data_path(cfg: Config, repeats: int = 5) -> dict[str, float]:
    """Best of ``repeats`` interleaved passes of each (all see the same machine load); the
    medians ride along in the JSON."""
    schema = FeatureSchema.from_config(cfg)
    reader = ParquetBatchReader(f"{cfg.data.root}/train", schema, cfg.data.batch_size,
                                shuffle=cfg.data.shuffle, seed=cfg.seed)
    in_order = ParquetBatchReader(f"{cfg.data.root}/train", schema, cfg.data.batch_size)
    runs: dict[str, list[float]] = {"decode_floor": [], "record_batch_loop": [], "reader": [],
                                    "reader_in_file_order": []}
    for _ in range(repeats):
        runs["decode_floor"].append(raw_decode_rows_per_s(reader))
        runs["record_batch_loop"].append(record_batch_loop_rows_per_s(reader))
        runs["reader"].append(reader_rows_per_s(reader))
        runs["reader_in_file_order"].append(reader_rows_per_s(in_order))
    best = {k: max(v) for k, v in runs.items()}
    return ({f"{k}_rows_per_s": v for k, v in best.items()}
            | {f"{k}_median_rows_per_s": statistics.median(v) for k, v in runs.items()}
            | {"reader_vs_decode_floor": best["reader"] / best["decode_floor"],
               "reader_vs_record_batch_loop": best["reader"] / best["record_batch_loop"],
               "reader_in_file_order_vs_decode_floor":
                   best["reader_in_file_order"] / best["decode_floor"]})


def bench(cfg: Config, steps: int = 60, ray_workers: int = 2, out: str | None = None,
          ranks: tuple[int, ...] = (2,), data_repeats: int = 5) -> dict[str, Any]:
    """``ranks``: the multi-process runs without Ray (world sizes; on cuda those above the
    GPU count are skipped: one GPU per rank)."""
    cfg = absolute_data_root(cfg)
    torch.manual_seed(cfg.seed)
    results: dict[str, Any] = {
        "config": cfg.name, "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
        "device": cfg.train.device,
        "versions": {p: version(p) for p in ("torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu",
                                              "ray", "pyarrow") if _installed(p)},
    }
    print(f"bench: {cfg.name} on {results['cpu']} ({results['torch_threads']} threads)")
    results["data_path"] = bench_data_path(cfg, repeats=data_repeats)
    d = results["data_path"]
    order = "shuffled" if cfg.data.shuffle else "in file order"
    print(f"data path: reader {d['reader_rows_per_s']:,.0f} rows/s (validated, {order}, KJT "
          f"batches); pyarrow record-batch loop {d['record_batch_loop_rows_per_s']:,.0f} rows/s "
          f"({d['reader_vs_record_batch_loop']:.0%}); decode floor (row groups to numpy) "
          f"{d['decode_floor_rows_per_s']:,.0f} rows/s ({d['reader_vs_decode_floor']:.0%}); "
          f"reader in file order {d['reader_in_file_order_rows_per_s']:,.0f} rows/s "
          f"({d['reader_in_file_order_vs_decode_floor']:.0%} of the floor)", flush=True)

    results["single_process"] = s = bench_ranks(cfg, steps, world=1)
    print(f"single process (torchrec DMP, 1 rank): {s['samples_per_s']:,.0f} samples/s; "
          f"step ms {s['step_ms']}; checkpoint {s['checkpoint_mb']:.0f} MB saved in "
          f"{s['checkpoint_save_s']:.2f}s, restored in {s['checkpoint_restore_s']:.2f}s",
          flush=True)

    reader, _ = train_readers(cfg, 0, 1)
    batches = list(islice(reader.epoch(0), min(steps, 30)))
    results["baseline"] = bench_baseline(cfg, batches)
    b = results["baseline"]
    ratio = s["samples_per_s"] / b["samples_per_s"]
    results["single_process"]["vs_baseline"] = ratio
    print(f"pure-PyTorch baseline (in-memory data): {b['samples_per_s']:,.0f} samples/s; "
          f"recmtl / baseline = {ratio:.2f}x", flush=True)

    if not cfg.train.bf16 and (cfg.train.device == "cuda" or cpu_has_bf16()):
        bf16 = derive(cfg, {"train.bf16": True})
        results["single_process_bf16"] = s16 = bench_ranks(bf16, steps, world=1)
        print(f"single process, train.bf16=true: {s16['samples_per_s']:,.0f} samples/s "
              f"({s16['samples_per_s'] / s['samples_per_s']:.2f}x float32); step ms "
              f"{s16['step_ms']}", flush=True)

    if cfg.train.device == "cuda":
        ranks = tuple(w for w in ranks if w <= torch.cuda.device_count())
    for world in ranks:
        r = bench_ranks(cfg, steps, world)
        results[f"ranks_{world}"] = r
        print(f"{world} processes, no Ray: {r['samples_per_s']:,.0f} samples/s; step ms "
              f"{r['step_ms']}; communication {r['communication_ms_per_step']} ms/step "
              f"({r['communication_share']:.0%}, profiled); checkpoint "
              f"{r['checkpoint_mb']:.0f} MB saved in {r['checkpoint_save_s']:.2f}s, restored in "
              f"{r['checkpoint_restore_s']:.2f}s", flush=True)

    if ray_workers:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run_cfg = derive(cfg, {"train.num_workers": ray_workers,
                                   "train.max_steps_per_epoch": steps, "train.epochs": 1})
            _, metrics = fit(run_cfg, Path(tmp), None, None)
            wall = time.perf_counter() - t0
        results["ray"] = {"workers": ray_workers,
                          # rows of all ranks over rank 0's steady-state time
                          "samples_per_s": metrics["train/epoch_samples_per_s"],
                          "fit_seconds": wall,
                          "worker_peak_rss_mb": metrics.get("peak_rss_mb")}
        print(f"Ray Train, {ray_workers} workers: {results['ray']['samples_per_s']:,.0f} "
              f"samples/s (fit incl. start, validation, checkpoint: {wall:.0f}s)", flush=True)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = Path(out) if out else (Path(cfg.output_dir)
                                  / f"bench-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=float))
    print(f"peak memory {results['peak_rss_mb']:,.0f} MB; wrote {path}")
    return results


def _installed(package: str) -> bool:
    try:
        version(package)
        return True
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.training",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--ray-workers", type=int, default=2, help="0 skips the Ray run")
    parser.add_argument("--ranks", default="2",
                        help="comma-separated world sizes of the runs without Ray ('' skips)")
    parser.add_argument("--data-repeats", type=int, default=5, help="passes of the data path")
    parser.add_argument("--json", help="where to write the results")
    args = parser.parse_args(argv)
    quiet_third_party()
    return run_guarded(lambda: bench(load_config(args.config, args.overrides), steps=args.steps,
                                     ray_workers=args.ray_workers, out=args.json,
                                     ranks=tuple(int(w) for w in args.ranks.split(",") if w),
                                     data_repeats=args.data_repeats),
                       prog="bench")


if __name__ == "__main__":
    sys.exit(main())
