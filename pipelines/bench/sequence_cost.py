"""Behaviour sequences, cost (issue #15): training samples/s and peak memory of the DIN model at
history lengths 20, 50 and 200 beside the same model without its sequence features, in one run.

    python -m pipelines.bench.sequence_cost configs/sequences/din.yaml
    python -m pipelines.bench.sequence_cost configs/sequences/din.yaml --lengths 20,50,200 --encoders din,bst

For each length L a store is generated from the config's sequence generator with histories cut
at L and drawn with a mean of 10 L (so ~90% of the rows hold exactly L items, the rest fewer),
and every sequence feature keeps ``max_len = L``. The no-sequence model is the config with its
sequence features removed, on the L = max store; it runs first in each of the ``--repeats``
rounds of every variant, and each ratio to it is per round. Each variant trains ``--steps``
steps in a fresh process (torchrec DMP on one rank, the real loop: ``bench_ranks``), so its
peak memory (``ru_maxrss`` of that process) is its own. Time per sample (of the medians) is
then split into the no-sequence part and the sequences' extra, whose growth from the shortest
to the longest length is compared with the growth of L (linear cost: the same ratio).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.bench.harness import bench_parser, interleave, parse, print_table, run_bench, write_results
from recmtl.config import Config, config_from_dict, derive, load_config


def with_length(cfg: Config, length: int, encoder: str, root: str) -> Config:
    """``cfg`` reading ``root``, whose histories are cut at ``length``; every sequence feature
    keeps ``length`` ids and pools them with ``encoder`` (din, or bst with one layer)."""
    bst = {"num_heads": 2, "num_layers": 1, "ffn_dim": 32} if encoder == "bst" else {}
    sparse = [f | {"sequence": f["sequence"] | {"max_len": length, "encoder": encoder} | bst}
              if f.get("sequence") else f for f in cfg.to_dict()["features"]["sparse"]]
    return derive(cfg, {"data.root": root, "synthetic.max_history_len": length,
                       "synthetic.mean_history_len": 10.0 * length,
                       "features.sparse": sparse})


def without_sequences(cfg: Config) -> Config:
    sparse = [f for f in cfg.to_dict()["features"]["sparse"] if not f.get("sequence")]
    return derive(cfg, {"features.sparse": sparse})


def measure(cfg: Config, steps: int) -> dict[str, Any]:
    """Trains ``steps`` steps of ``cfg`` in a fresh process; samples/s and its peak RSS."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg.to_dict(), f)
    out = subprocess.run([sys.executable, "-m", "pipelines.bench.sequence_cost", "--one", f.name,
                          "--steps", str(steps)], capture_output=True, text=True)
    Path(f.name).unlink()
    if out.returncode != 0:
        raise RuntimeError(f"variant failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def one(path: str, steps: int) -> None:
    from pipelines.bench.ranks import bench_ranks

    cfg = config_from_dict(json.loads(Path(path).read_text()))
    result = bench_ranks(cfg, steps, world=1)  # the rank runs in a child: its peak is its own
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"samples_per_s": result["samples_per_s"], "peak_rss_mb": peak_mb,
                      "step_ms": result["step_ms"]}))


def bench(config: str, overrides: list[str], lengths: list[int], encoders: list[str],
          steps: int, repeats: int = 1) -> dict[str, Any]:
    from pipelines.synthetic.sequences import generate_sequences

    base = load_config(config, overrides)
    stores = {}
    for length in lengths:
        root = f"{base.data.root}-cost-{length}"
        cfg = with_length(base, length, "din", root)
        if not Path(root, "train").exists():
            generate_sequences(cfg, root)
        stores[length] = root
    variants: dict[str, Config] = {
        "no_sequences": without_sequences(with_length(base, max(lengths), "din",
                                                      stores[max(lengths)]))}
    for encoder in encoders:
        for length in lengths:
            variants[f"{encoder}@{length}"] = with_length(base, length, encoder, stores[length])
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}

    def trained(name: str) -> Callable[[], float]:
        def samples_per_s() -> float:
            measured[name].append(measure(variants[name], steps))
            print(f"{name}: {measured[name][-1]['samples_per_s']:,.0f} samples/s", flush=True)
            return float(measured[name][-1]["samples_per_s"])
        return samples_per_s

    # every variant once per round, the no-sequence model first: its ratios are per round
    turns = interleave({name: trained(name) for name in variants}, "no_sequences", repeats)
    results: dict[str, Any] = {
        name: {"samples_per_s": turns.median(name), "runs": turns.runs[name],
               "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "step_ms": runs[-1]["step_ms"]}
        for name, runs in measured.items()}
    plain = results["no_sequences"]["samples_per_s"]
    rows: list[dict[str, Any]] = [{"variant": "no_sequences", "samples/s": plain,
                                   "peak MB": results["no_sequences"]["peak_rss_mb"]}]
    for encoder in encoders:
        extra = {n: 1 / results[f"{encoder}@{n}"]["samples_per_s"] - 1 / plain for n in lengths}
        for n in lengths:
            r = results[f"{encoder}@{n}"]
            r["vs_no_sequences"] = turns.ratio(f"{encoder}@{n}")
            r["extra_us_per_sample"] = extra[n] * 1e6
            rows.append({"variant": f"{encoder}@{n}", "samples/s": r["samples_per_s"],
                         "peak MB": r["peak_rss_mb"], "x no sequences": r["vs_no_sequences"],
                         "extra us/sample": extra[n] * 1e6,
                         "us per history slot": extra[n] * 1e6 / n})
    print_table(rows, {"samples/s": ",.0f", "peak MB": ",.0f", "x no sequences": ".2f",
                       "extra us/sample": ".1f", "us per history slot": ".2f"})
    lo, hi = min(lengths), max(lengths)
    for encoder in encoders:
        low, high = (results[f"{encoder}@{n}"]["extra_us_per_sample"] for n in (lo, hi))
        if low > 0:
            print(f"{encoder}: the sequences' cost grows {high / low:.1f}x from L={lo} "
                  f"to L={hi} (L grows {hi / lo:.1f}x)")
    return {"config": config, "steps": steps, "variants": results}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("sequence_cost", __doc__, config="optional",
                          json_default="runs/sequence_cost.json", out_alias=True, repeats=1,
                          repeats_help="rounds of every variant, the no-sequence model first")
    parser.add_argument("--lengths", default="20,50,200")
    parser.add_argument("--encoders", default="din", help="din, bst or both: din,bst")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one variant, this process
    args = parse(parser, argv)
    if args.one:
        return run_bench(lambda: one(args.one, args.steps))
    if not args.config:
        parser.error("the config is required")
    lengths = sorted(int(n) for n in args.lengths.split(","))
    return run_bench(lambda: write_results(args, bench(
        args.config, args.overrides, lengths, args.encoders.split(","), args.steps, args.repeats)))


if __name__ == "__main__":
    sys.exit(main())
