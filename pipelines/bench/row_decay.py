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

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipelines.bench.quality import run_variant
from pipelines.cli import run_guarded
from recmtl.config import ConfigError, load_config
from recmtl.logs import quiet_third_party

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


def bench(config: str, overrides: list[str], decays: list[float], out: str,
          names: tuple[str, ...] = TABLES) -> list[dict[str, Any]]:
    results = []
    for name, changes in variants(config, overrides, decays, names).items():
        r = run_variant(config, f"decay-{name}", changes, overrides)
        results.append(r)
        print("  ".join([f"{name:16s}"] + [
            f"{t} AUC {m['auc']:.4f} p/y {m['calibration']:.3f} logloss {m['logloss']:.4f}"
            for t, m in r["tasks"].items()
            if m.get("auc") is not None]), flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"config": config, "results": results}, indent=2))
    print(f"wrote {out}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.row_decay",
                                     description="row weight decay on long-tailed ids")
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for every variant")
    parser.add_argument("--decay", default="0.01,0.1", help="comma-separated weight decays")
    parser.add_argument("--tables", default=",".join(TABLES),
                        help="comma-separated tables to decay (default: user,item)")
    parser.add_argument("--out", default="runs/row_decay.json")
    args = parser.parse_intermixed_args(argv)
    quiet_third_party()
    decays = [float(v) for v in args.decay.split(",")]
    names = tuple(args.tables.split(","))
    return run_guarded(lambda: bench(args.config, args.overrides, decays, args.out, names),
                       prog="bench")


if __name__ == "__main__":
    sys.exit(main())
