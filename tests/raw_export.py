"""A raw feature-store export for `recmtl prepare` and the serving of its transforms: string
and integer ids, lists with nulls, null floats, timestamps, written as two Parquet files."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipelines.feature_store.spec import load_spec

N = 400
DAY0 = dt.datetime(2026, 11, 1)


def raw_columns(seed=0, n=N):
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 30, n)
    items[-5:] = 999  # only in the last days (test): unseen in train
    clicked = [None if i % 17 == 0 else [int(v) if i % 23 else None
                                          for v in rng.integers(0, 30, i % 4)] for i in range(n)]
    price = rng.lognormal(size=n)
    price_list = [None if i % 13 == 0 else float(price[i]) for i in range(n)]
    click = (rng.random(n) < 0.3).astype(np.int8)
    return {
        "user": [f"u{v}" for v in rng.integers(0, 50, n)],
        "item": items.astype(np.int64),
        "clicked_item_ids": clicked,
        "price": price_list,
        "age": rng.integers(18, 80, n).astype(np.float64),
        "ts": [DAY0 + dt.timedelta(hours=int(h)) for h in np.sort(rng.integers(0, 240, n))],
        "click": click,
        "conversion": (click * (rng.random(n) < 0.4)).astype(np.int8),
    }


def write_export(tmp_path, cols, split_at=N // 2, name="export"):
    root = tmp_path / name
    root.mkdir()
    table = pa.table(cols)
    pq.write_table(table.slice(0, split_at), root / "day-a.parquet", row_group_size=64)
    pq.write_table(table.slice(split_at), root / "day-b.parquet", row_group_size=64)
    return root


SPEC = {
    "name": "shop",
    "labels": ["click", "conversion"],
    "sparse": [
        {"name": "user_id", "column": "user", "transform": "hash", "buckets": 64, "dim": 8},
        {"name": "item_id", "column": "item", "transform": "vocab", "min_count": 3, "dim": 8},
        {"name": "clicked_items", "column": "clicked_item_ids", "table": "item_id",
         "multi_valued": True, "dim": 8},
    ],
    "dense": [{"name": "price", "transform": "log1p_standardize"},
              {"name": "age", "transform": "bucketize", "num_buckets": 4, "dim": 8}],
    "group": "user",
    "keep": ["ts"],
    "split": {"kind": "time", "column": "ts", "valid_from": "2026-11-07",
              "test_from": "2026-11-09"},
    "rows_per_file": 100,
    "row_group_size": 32,
}


def write_spec(tmp_path, src, **changes):
    raw = {**SPEC, "source": str(src), "output": str(tmp_path / "out"), **changes}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def prepare_vocab_store(tmp_path, **changes):
    """The export prepared with vocabularies for users and items (``min_count`` 1: every train
    value has a row, so no train row reads the OOV id); returns the output directory."""
    from pipelines.feature_store.prepare import prepare

    src = write_export(tmp_path, {**raw_columns(), "row_key": np.arange(N)})
    sparse = [
        {"name": "user_id", "column": "user", "transform": "vocab", "dim": 8},
        {"name": "item_id", "column": "item", "transform": "vocab", "dim": 8},
    ]  # no history: its null list items would read the OOV row (nulls.sparse: oov)
    prepare(write_spec(tmp_path, src, sparse=sparse, keep=["ts", "row_key"],
                       dense=[{"name": "price", "transform": "log1p_standardize"}], **changes))
    return tmp_path / "out"
