"""Training throughput and where the time goes, on this machine.

    python -m pipelines.bench.training CONFIG [dotted.key=value ...] [--steps 60] [--ray-workers 2]
        [--ranks 2] [--data-repeats 5] [--repeats 1] [--json PATH]


Prints and writes JSON (``runs/bench-<name>-<time>.json``) of:
- the data path: Parquet -> ``Batch`` rows/s beside two references on the same columns: a
  plain pyarrow record-batch loop into torch tensors, and the decode floor (whole row groups
  to numpy, nothing else);
- training samples/s on 1 and 2 processes without Ray (as torchrun; torchrec DMP on gloo, the
  real loop, ``bench_ranks``): step breakdown, the share spent in communication, sharded
  checkpoint save and restore times; and the pure-PyTorch baseline (``bench_baseline``) in the
  same run, the two taking turns ``--repeats`` times, so the ratio (the median of the rounds')
  survives a noisy machine;
- single-process samples/s with ``train.bf16`` too, where the CPU has bfloat16 dot products
  (or on CUDA), beside float32 in the same run;
- training samples/s on N Ray workers (the real job, with validation and checkpoint);
- peak memory, versions, CPU model, threads. On CUDA (``train.device=cuda``) the same runs use
  the GPU.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import tempfile
import time
from functools import partial
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipelines.bench.baseline import bench_baseline
from pipelines.bench.harness import bench_parser, interleave, parse, print_table, run_bench, write_results
from pipelines.bench.ranks import bench_ranks
from recmtl.config import Config, derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
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
    runs = interleave({"decode_floor": partial(raw_decode_rows_per_s, reader),
                       "record_batch_loop": partial(record_batch_loop_rows_per_s, reader),
                       "reader": partial(reader_rows_per_s, reader),
                       "reader_in_file_order": partial(reader_rows_per_s, in_order)},
                      "decode_floor", repeats).runs
    best = {k: max(v) for k, v in runs.items()}
    return ({f"{k}_rows_per_s": v for k, v in best.items()}
            | {f"{k}_median_rows_per_s": statistics.median(v) for k, v in runs.items()}
            | {"reader_vs_decode_floor": best["reader"] / best["decode_floor"],
               "reader_vs_record_batch_loop": best["reader"] / best["record_batch_loop"],
               "reader_in_file_order_vs_decode_floor":
                   best["reader_in_file_order"] / best["decode_floor"]})


def print_data_path(d: dict[str, float], shuffled: bool) -> None:
    order = "shuffled" if shuffled else "in file order"
    names = {"reader": f"reader (validated, {order}, KJT batches)",
             "reader_in_file_order": "reader in file order",
             "record_batch_loop": "pyarrow record-batch loop",
             "decode_floor": "decode floor (row groups to numpy)"}
    print_table([{"data path": label, "rows/s (best)": d[f"{k}_rows_per_s"],
                  "rows/s (median)": d[f"{k}_median_rows_per_s"],
                  "x decode floor": d[f"{k}_rows_per_s"] / d["decode_floor_rows_per_s"],
                  "x record-batch loop": d[f"{k}_rows_per_s"] / d["record_batch_loop_rows_per_s"]}
                 for k, label in names.items()],
                {"rows/s (best)": ",.0f", "rows/s (median)": ",.0f", "x decode floor": ".0%",
                 "x record-batch loop": ".0%"})


def against_baseline(cfg: Config, steps: int, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """recmtl on one process (``bench_ranks``) and the pure-PyTorch baseline in turns; each's
    last run with its median samples/s and runs, recmtl's with its per-round ratio."""
    reader, _ = train_readers(cfg, 0, 1)
    batches = list(islice(reader.epoch(0), min(steps, 30)))
    last: dict[str, dict[str, Any]] = {}

    def recmtl() -> float:
        last["recmtl"] = bench_ranks(cfg, steps, world=1)
        return float(last["recmtl"]["samples_per_s"])

    def baseline() -> float:
        last["baseline"] = bench_baseline(cfg, batches)
        return last["baseline"]["samples_per_s"]

    turns = interleave({"recmtl": recmtl, "baseline": baseline}, "baseline", repeats)
    single = last["recmtl"] | {"samples_per_s": turns.median("recmtl"), "runs": turns.runs["recmtl"],
                               "vs_baseline": turns.ratio("recmtl"),
                               "vs_baseline_per_round": turns.ratios("recmtl")}
    base = last["baseline"] | {"samples_per_s": turns.median("baseline"),
                               "runs": turns.runs["baseline"]}
    return single, base


def _row(run: str, r: dict[str, Any], vs_baseline: float | None = None,
         vs_float32: float | None = None) -> dict[str, Any]:
    """A training run's line of the table: samples/s, its ratio, the step, comms, checkpoint."""
    return {"run": run, "samples/s": r["samples_per_s"], "x baseline": vs_baseline,
            "x float32": vs_float32, "comm ms/step": r.get("communication_ms_per_step"),
            "comm share": r.get("communication_share"), "ckpt MB": r.get("checkpoint_mb"),
            "save s": r.get("checkpoint_save_s"), "restore s": r.get("checkpoint_restore_s"),
            "step ms": ", ".join(f"{k} {v}" for k, v in r.get("step_ms", {}).items()) or None}


TRAINING_FORMATS = {"samples/s": ",.0f", "x baseline": ".2f", "x float32": ".2f",
                    "comm ms/step": ".2f", "comm share": ".0%", "ckpt MB": ",.0f", "save s": ".2f",
                    "restore s": ".2f", "fit s (start, validation, checkpoint)": ".0f"}


def bench(cfg: Config, steps: int = 60, ray_workers: int = 2, ranks: tuple[int, ...] = (2,),
          data_repeats: int = 5, repeats: int = 1) -> dict[str, Any]:
    """``ranks``: the multi-process runs without Ray (world sizes; on cuda those above the
    GPU count are skipped: one GPU per rank). ``repeats``: rounds of recmtl then the baseline."""
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
    print_data_path(results["data_path"], cfg.data.shuffle)

    s, b = against_baseline(cfg, steps, repeats)
    results["single_process"], results["baseline"] = s, b
    table = [_row("1 process (torchrec DMP)", s, vs_baseline=s["vs_baseline"]),
             _row("pure-PyTorch baseline (in-memory data)", b)]
    print(f"1 process and the baseline: {repeats} round(s) done", flush=True)

    if not cfg.train.bf16 and (cfg.train.device == "cuda" or cpu_has_bf16()):
        bf16 = derive(cfg, {"train.bf16": True})
        results["single_process_bf16"] = s16 = bench_ranks(bf16, steps, world=1)
        table.append(_row("1 process, train.bf16=true", s16,
                          vs_float32=s16["samples_per_s"] / s["samples_per_s"]))
        print("1 process with bf16: done", flush=True)

    if cfg.train.device == "cuda":
        ranks = tuple(w for w in ranks if w <= torch.cuda.device_count())
    for world in ranks:
        results[f"ranks_{world}"] = r = bench_ranks(cfg, steps, world)
        table.append(_row(f"{world} processes, no Ray", r))
        print(f"{world} processes: done", flush=True)

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
        table.append({"run": f"Ray Train, {ray_workers} workers",
                      "samples/s": results["ray"]["samples_per_s"],
                      "fit s (start, validation, checkpoint)": wall})
    print_table(table, TRAINING_FORMATS)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {results['peak_rss_mb']:,.0f} MB")
    return results


def _installed(package: str) -> bool:
    try:
        version(package)
        return True
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("training", __doc__, config="required", repeats=1,
                          repeats_help="rounds of recmtl on 1 process then the baseline")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--ray-workers", type=int, default=2, help="0 skips the Ray run")
    parser.add_argument("--ranks", default="2",
                        help="comma-separated world sizes of the runs without Ray ('' skips)")
    parser.add_argument("--data-repeats", type=int, default=5, help="passes of the data path")
    args = parse(parser, argv)

    def run() -> None:
        cfg = load_config(args.config, args.overrides)
        results = bench(cfg, steps=args.steps, ray_workers=args.ray_workers,
                        ranks=tuple(int(w) for w in args.ranks.split(",") if w),
                        data_repeats=args.data_repeats, repeats=args.repeats)
        write_results(args, results, default=Path(cfg.output_dir) / (
            f"bench-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"))

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
