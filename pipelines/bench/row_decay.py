"""Row weight decay on long-tailed ids (issue #16, item 2): the same config trained with no
decay, decoupled decay and DIN's frequency-aware decay on its user and item tables, each a
real `recmtl train` run; test AUC, p/y (mean prediction over observed rate) and logloss per
task. The synthetic store's users and items are drawn with Zipf-like skew (activity and
popularity), so most ids are rare.

    recmtl generate configs/demo.yaml
    python -m pipelines.bench.row_decay configs/demo.yaml --decay 0.01,0.1

On the long-tailed store (``synthetic.kind: longtail``, docs/calibration.md), whose prepared
tables are named after their features:

    python -m pipelines.bench.row_decay data/longtail/prepared/longtail.yaml --tables user_id,item_id
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pipelines.bench.harness import bench_parser, parse, print_table, run_bench, write_results
from pipelines.bench.quality import run_variant
from recmtl.config import ConfigError, load_config

TABLES = ("user", "item")


def variants(config: str, overrides: list[str], decays: list[float],
             names: tuple[str, ...] = TABLES) -> dict[str, list[str]]:
    """``{name: overrides}``: the config's tables called ``names`` decayed each way."""
    tables = load_config(config, overrides).to_dict()["features"]["tables"]
    unknown = set(names) - {t["name"] for t in tables}
    if unknown:
        raise ConfigError(f"{config}: --tables: no table {sorted(unknown)}")
    out: dict[str, list[str]] = {"none": []}
    for mode in ("decoupled", "frequency"):
        for wd in decays:
            decayed = [t | {"weight_decay": wd, "weight_decay_mode": mode}
                       if t["name"] in names else t for t in tables]
            out[f"{mode}_{wd:g}"] = [f"features.tables={json.dumps(decayed)}"]
    return out


def bench(config: str, overrides: list[str], decays: list[float],
          names: tuple[str, ...] = TABLES) -> list[dict[str, Any]]:
    results = []
    for name, changes in variants(config, overrides, decays, names).items():
        results.append(run_variant(config, f"decay-{name}", changes, overrides))
        print(f"{name}: trained in {results[-1]['wall_seconds']:.0f} s", flush=True)
    rows = [{"variant": r["variant"].removeprefix("decay-")}
            | {f"{t} {label}": m[key] for t, m in r["tasks"].items() if m.get("auc") is not None
               for key, label in (("auc", "AUC"), ("calibration", "p/y"), ("logloss", "logloss"))}
            for r in results]
    print_table(rows, {c: ".3f" if c.endswith("p/y") else ".4f" for row in rows for c in row})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("row_decay", __doc__, config="required",
                          json_default="runs/row_decay.json", out_alias=True)
    parser.add_argument("--decay", default="0.01,0.1", help="comma-separated weight decays")
    parser.add_argument("--tables", default=",".join(TABLES),
                        help="comma-separated tables to decay (default: user,item)")
    args = parse(parser, argv)
    decays = [float(v) for v in args.decay.split(",")]
    names = tuple(args.tables.split(","))
    return run_bench(lambda: write_results(args, {
        "config": args.config, "variants": bench(args.config, args.overrides, decays, names)}))


if __name__ == "__main__":
    sys.exit(main())
