"""Open id spaces three ways (issue #14, item 3): the user and item tables of one synthetic
day as a vocabulary (exact rows for every id seen in train), hashed into ``R`` rows, and as a
managed-collision table of ``R`` rows (ids admitted by frequency as training sees them).

Each variant is prepared from the same raw day, trained by `recmtl train` (Ray, MLflow,
export) and scored on the next day's raw rows through its own bundle. The collision rate is
the share of those test rows whose id reads an embedding row that another id also reads:
unseen ids on the vocabulary's OOV row, ids sharing a hash bucket, ids without a managed row
(they share the table's last row); counted among the distinct ids of both days.

    recmtl generate configs/daily/daily.yaml data.root=/tmp/bm/data synthetic.days=2
    python -m pipelines.bench.managed configs/daily/daily.yaml data.root=/tmp/bm/data \\
        daily.raw=/tmp/bm/data/raw daily.work_dir=/tmp/bm/work --rows-fraction 0.5
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from pipelines.bench.harness import bench_parser, parse, print_table, run_bench, write_results
from pipelines.feature_store.partitions import read_rows
from pipelines.jobs.daily import prepare_day, raw_aucs, window
from recmtl.config import load_config, read_yaml_mapping
from recmtl.export.inputs import lookup_rows

TABLES = ("user_id", "item_id")
VARIANTS = ("vocab", "hash", "managed")


def bench_managed(config: str, overrides: list[str], fraction: float) -> dict[str, Any]:
    from pipelines.jobs.train import train
    from recmtl.export.scorer import BundleScorer

    cfg = load_config(config, overrides)
    config_dir = Path(config).resolve().parent
    day = window(cfg, config_dir)[0]
    work = Path(cfg.daily.work_dir).resolve() / "managed"
    both = pa.concat_tables([read_rows(day.raw), read_rows(day.next_raw)],
                            promote_options="permissive")
    test = read_rows(day.next_raw)
    train_rows = read_rows(day.raw, columns=list(TABLES))
    rows = {t: max(2, int(fraction * len(np.unique(train_rows.column(t).to_numpy()))))
            for t in TABLES}
    spec_path = config_dir / cfg.daily.spec
    tasks = [t.name for t in cfg.tasks if t.kind == "binary"]
    results = []
    for variant in VARIANTS:
        spec = _variant_spec(read_yaml_mapping(spec_path), variant, rows)
        (work / variant).mkdir(parents=True, exist_ok=True)
        variant_spec = work / variant / "prepare.yml"
        variant_spec.write_text(yaml.safe_dump(spec, sort_keys=False))
        data = prepare_day(day, variant_spec, Path(config).resolve(), work / variant, None,
                           cfg.daily.valid_hours)
        day_cfg = load_config(data / f"{spec['name']}.yaml",
                              [*overrides, f"data.root={data}", f"name=managed-{variant}",
                               f"output_dir={work / variant / 'runs'}"])
        started = time.perf_counter()
        summary = train(day_cfg)
        seconds = time.perf_counter() - started
        scorer = BundleScorer(summary["export"])
        results.append({
            "variant": variant, "rows": {t: _rows(day_cfg, t) for t in TABLES},
            "auc": raw_aucs(summary["export"], test, day_cfg, tasks),
            "collision_rate": {t: collision_rate(scorer, both, test, t) for t in TABLES},
            "epoch_seconds": summary["epoch_seconds"], "job_seconds": round(seconds, 1)})
        print(f"{variant}: trained and scored", flush=True)
    print_table([{"variant": r["variant"]} | {f"{t} AUC": r["auc"][t] for t in tasks}
                 | {f"{t} {k}": r[key][t] for t in TABLES
                    for k, key in (("rows", "rows"), ("collisions", "collision_rate"))}
                 | {"epoch s": r["epoch_seconds"]} for r in results],
                {f"{t} AUC": ".4f" for t in tasks}
                | {f"{t} collisions": ".3f" for t in TABLES} | {"epoch s": ".1f"})
    return {"config": config, "overrides": overrides, "rows_fraction": fraction,
            "variants": results}


def _variant_spec(spec: dict[str, Any], variant: str, rows: dict[str, int]) -> dict[str, Any]:
    """The day's prepare spec with the user and item tables as ``variant``."""
    spec = dict(spec, name=f"managed-{variant}")
    sparse = []
    for f in spec["sparse"]:
        f = dict(f)
        if f["name"] in TABLES and variant != "vocab":
            f |= {"transform": variant, "buckets": rows[f["name"]]}
        sparse.append(f)
    spec["sparse"] = sparse
    return spec


def _rows(cfg: Any, table: str) -> int:
    return next(t.num_embeddings for t in cfg.features.tables if t.name == table)


def collision_rate(scorer: Any, both: pa.Table, test: pa.Table, feature: str) -> float:
    """Share of ``test`` rows whose id reads an embedding row shared with another distinct id
    of ``both`` (the train day and the test day)."""
    def rows_of(table: pa.Table) -> np.ndarray:
        ids = scorer.raw.apply(table, "bench rows").column(feature).to_numpy()
        managed = scorer.managed.get(feature)
        if managed is None:
            return np.asarray(ids)
        import torch

        return lookup_rows(torch.from_numpy(np.asarray(ids)), managed["ids"], managed["rows"],
                           managed["default"]).numpy()

    pairs = np.unique(np.stack([rows_of(both), _codes(both.column(feature))]), axis=1)
    held, ids_per_row = np.unique(pairs[0], return_counts=True)
    shared = held[ids_per_row > 1]
    return float(np.isin(rows_of(test), shared).mean())


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """An int64 code per distinct raw value (strings or integers)."""
    return np.asarray(column.combine_chunks().dictionary_encode().indices, dtype=np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("managed", __doc__, config="required")
    parser.add_argument("--rows-fraction", type=float, default=0.5,
                        help="hash and managed tables' rows, as a share of the day's distinct ids")
    args = parse(parser, argv)

    def run() -> None:
        work = Path(load_config(args.config, args.overrides).daily.work_dir).resolve() / "managed"
        write_results(args, bench_managed(args.config, args.overrides, args.rows_fraction),
                      default=work / "bench-managed.json")

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
