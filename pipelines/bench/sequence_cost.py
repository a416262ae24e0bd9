"""Behaviour sequences, cost (issue #15): training samples/s and peak memory of the DIN model at
history lengths 20, 50 and 200 beside the same model without its sequence features, in one run.

    python -m pipelines.bench.sequence_cost configs/sequences/din.yaml
    python -m pipelines.bench.sequence_cost configs/sequences/din.yaml --lengths 20,50,200 --encoders din,bst

For each length L a store is generated from the config's sequence generator with histories cut
at L and drawn with a mean of 10 L (so ~90% of the rows hold exactly L items, the rest fewer),
and every sequence feature keeps ``max_len = L``. The no-sequence model is the config with its
sequence features removed, on the L = max store. Each variant trains ``--steps`` steps in a
fresh process (torchrec DMP on one rank, the real loop: ``bench_ranks``), so its peak memory
(``ru_maxrss`` of that process) is its own. Time per sample is then split into the
no-sequence part and the sequences' extra, whose growth from the shortest to the longest
length is compared with the growth of L (linear cost: the same ratio).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipelines.cli import run_guarded
from recmtl.config import Config, config_from_dict, derive, load_config
from recmtl.logs import quiet_third_party


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
          steps: int, out: str) -> dict[str, Any]:
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
    results: dict[str, Any] = {}
    for name, cfg in variants.items():
        results[name] = r = measure(cfg, steps)
        print(f"{name:14s} {r['samples_per_s']:>10,.0f} samples/s  peak {r['peak_rss_mb']:,.0f} MB"
              f"  step ms {r['step_ms']}", flush=True)
    plain = results["no_sequences"]["samples_per_s"]
    print(f"\nno sequences: {plain:,.0f} samples/s")
    for encoder in encoders:
        extra = {n: 1 / results[f"{encoder}@{n}"]["samples_per_s"] - 1 / plain for n in lengths}
        for n in lengths:
            r = results[f"{encoder}@{n}"]
            r["vs_no_sequences"] = r["samples_per_s"] / plain
            r["extra_us_per_sample"] = extra[n] * 1e6
            print(f"{encoder} L={n:<4d} {r['vs_no_sequences']:.2f}x of the no-sequence throughput; "
                  f"sequences add {extra[n] * 1e6:.1f} us/sample ({extra[n] * 1e6 / n:.2f} us per "
                  "history slot)")
        lo, hi = min(lengths), max(lengths)
        if extra[lo] > 0:
            print(f"{encoder}: the sequences' cost grows {extra[hi] / extra[lo]:.1f}x from L={lo} "
                  f"to L={hi} (L grows {hi / lo:.1f}x)")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"config": config, "steps": steps, "results": results},
                                    indent=2))
    print(f"wrote {out}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.sequence_cost",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for every variant")
    parser.add_argument("--lengths", default="20,50,200")
    parser.add_argument("--encoders", default="din", help="din, bst or both: din,bst")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="runs/sequence_cost.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one variant, this process
    args = parser.parse_intermixed_args(argv)
    quiet_third_party()
    if args.one:
        one(args.one, args.steps)
        return 0
    if not args.config:
        parser.error("the config is required")
    lengths = sorted(int(n) for n in args.lengths.split(","))
    return run_guarded(lambda: bench(args.config, args.overrides, lengths,
                                     args.encoders.split(","), args.steps, args.out),
                       prog="bench")


if __name__ == "__main__":
    sys.exit(main())
