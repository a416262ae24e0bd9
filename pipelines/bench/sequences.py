"""Behaviour sequences, quality (issue #15): on the sequence store, where click and conversion
depend on a target-dependent match with the history, one epoch of the same model five ways:
no history, the history pooled (summed, blind to the candidate), DIN target attention (with
and without the side lists, such as the events' age buckets) and a BST encoder; every task's
test AUC beside its oracle, the share of the pooled model's gap to the oracle that attention
closes, and training samples/s. Each variant is a real `recmtl
train` run (Ray, MLflow, report).

With ``--archs mmoe,dtrn,infnet`` the variants are instead the pooled baseline and the
config's DIN sequences under each ``model.arch`` (issue #18's task-specific architectures;
dtrn and infnet with ``interaction: none``, which they need with sequences).

    recmtl generate configs/sequences/din.yaml
    python -m pipelines.bench.sequences configs/sequences/din.yaml
    python -m pipelines.bench.sequences configs/sequences/din.yaml --archs mmoe,dtrn,infnet
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pipelines.bench.harness import bench_parser, parse, print_table, run_bench, write_results
from pipelines.bench.quality import run_variant
from recmtl.config import load_config

BST = {"encoder": "bst", "num_heads": 2, "num_layers": 1, "ffn_dim": 32}


def variants(config: str, overrides: list[str]) -> dict[str, list[str]]:
    """``{name: overrides}``: the config's sequence features kept, pooled, dropped (with their
    side lists), kept without side lists, or BST."""
    sparse = load_config(config, overrides).to_dict()["features"]["sparse"]
    sequences = [f["name"] for f in sparse if f.get("sequence")]
    sides = {s for f in sparse if f.get("sequence") for s in f["sequence"].get("side", ())}
    pooled = [{k: v for k, v in f.items() if k != "sequence"} for f in sparse]
    dropped = [f for f in pooled if f["name"] not in sequences and f["name"] not in sides]
    bst = [f | {"sequence": f["sequence"] | BST} if f.get("sequence") else f for f in sparse]
    din = [f | {"sequence": f["sequence"] | {"encoder": "din"}} if f.get("sequence") else f
           for f in sparse]
    din_alone = [f | {"sequence": f["sequence"] | {"side": []}} if f.get("sequence") else f
                 for f in din if f["name"] not in sides]
    named = [("no_history", dropped), ("pooled", pooled), ("din", din), ("bst", bst)]
    if sides:
        named.insert(3, ("din_without_side", din_alone))
    return {name: [f"features.sparse={json.dumps(s)}"] for name, s in named}


# The architectures whose sequence blocks are not one D block (per-task interests, items).
NO_DOT = ("dtrn", "infnet")


def arch_variants(config: str, overrides: list[str], archs: list[str]) -> dict[str, list[str]]:
    """``{name: overrides}``: the pooled baseline, then the DIN sequences under each arch."""
    four = variants(config, overrides)
    out = {"pooled": four["pooled"]}
    for arch in archs:
        extra = ["model.interaction=none"] if arch in NO_DOT else []
        out[f"{arch}_din"] = [*four["din"], f"model.arch={arch}", *extra]
    return out


def gap_closed(auc: float, pooled: float, oracle: float) -> float:
    """Share of the pooled model's gap to the oracle that ``auc`` closes."""
    return (auc - pooled) / (oracle - pooled) if oracle > pooled else float("nan")


def bench(config: str, overrides: list[str], archs: list[str] | None = None) -> list[dict[str, Any]]:
    results = []
    chosen = arch_variants(config, overrides, archs) if archs else variants(config, overrides)
    for name, changes in chosen.items():
        results.append(run_variant(config, name, changes, overrides))
        print(f"{name}: trained in {results[-1]['wall_seconds']:.0f} s", flush=True)
    pooled = next(r for r in results if r["variant"] == "pooled")["tasks"]
    for r in results:
        r["gap_closed"] = {t: gap_closed(m["auc"], pooled[t]["auc"], m["oracle_auc"])
                           for t, m in r["tasks"].items() if m.get("oracle_auc")}
    rows = table_rows(results)
    print_table(rows, {c: ",.0f" if c == "samples/s" else "+.2f" if c.endswith("closed") else ".4f"
                       for row in rows for c in row})
    return results


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: each task's AUC and the share of the pooled model's gap to the oracle it
    closes, samples/s; then the oracle's AUCs."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"variant": r["variant"]}
        for t, m in r["tasks"].items():
            if m.get("auc") is not None and m.get("oracle_auc"):
                row[f"{t} AUC"] = m["auc"]
                row[f"{t} gap closed"] = r["gap_closed"][t]
        rows.append(row | {"samples/s": r["samples_per_s"] or None})
    oracle = {t: m["oracle_auc"] for t, m in results[0]["tasks"].items() if m.get("oracle_auc")}
    return [*rows, {"variant": "oracle"} | {f"{t} AUC": v for t, v in oracle.items()}]


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("sequences", __doc__, config="required",
                          json_default="runs/sequences.json", out_alias=True)
    parser.add_argument("--archs", default="",
                        help="comma-separated model.arch values: pooled vs DIN under each")
    args = parse(parser, argv)
    archs = [a for a in args.archs.split(",") if a]
    return run_bench(lambda: write_results(args, {
        "config": args.config, "variants": bench(args.config, args.overrides, archs)}))


if __name__ == "__main__":
    sys.exit(main())
