"""Hand-made Parquet files for the reader tests."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recmtl.data.schema import FeatureSchema, SparseColumn

# The group column carries a unique row id, so the tests can see which rows were read.
SCHEMA = FeatureSchema(
    sparse=(SparseColumn("item", 50, False), SparseColumn("recent", 10, True)),
    dense=("price",),
    labels=("click", "conversion"),
    group="row_id",
    label_implies=(("conversion", "click"),),
)


def table(row_ids, seed=0, **replace):
    n = len(row_ids)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 4, size=n)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    click = rng.integers(0, 2, size=n).astype(np.int8)
    cols = {
        "row_id": pa.array(np.asarray(row_ids, dtype=np.int64)),
        "item": pa.array(rng.integers(0, 50, size=n)),
        "recent": pa.ListArray.from_arrays(pa.array(offsets),
                                           pa.array(rng.integers(0, 10, size=offsets[-1]))),
        "price": pa.array(rng.normal(size=n).astype(np.float32)),
        "click": pa.array(click),
        "conversion": pa.array((click & rng.integers(0, 2, size=n)).astype(np.int8)),
    }
    cols.update(replace)
    return pa.table(cols)


def write_store(root: Path, rows_per_file=(37, 50, 13), row_group_size=16) -> int:
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, n in enumerate(rows_per_file):
        pq.write_table(table(range(start, start + n), seed=i), root / f"part-{i:05d}.parquet",
                       row_group_size=row_group_size)
        start += n
    return start
