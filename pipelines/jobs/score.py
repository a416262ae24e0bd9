"""`recmtl score --bundle DIR --data PATH`: feature rows -> per-task scores, plain torch.

Streams the Parquet record batches (never the whole file), scores each with the bundle and
writes ``score_<task>`` columns (plus any ``--keep`` columns) to ``--out`` as Parquet. The rows
hold the training columns, or with ``--raw`` the feature-store columns that ``recmtl prepare``
read (the bundle then applies the transforms prepare fit).
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from recmtl.export.scorer import BundleScorer


def score(bundle: str | Path, data: str | Path, out: str | Path | None = None,
          backend: str = "torch", keep: tuple[str, ...] = (), batch_rows: int = 65536,
          raw: bool = False) -> int:
    scorer = BundleScorer(bundle, backend)
    if raw and scorer.raw is None:
        raise SystemExit(f"recmtl score: {bundle} has no raw transforms (its data did not come "
                         "from recmtl prepare); score the training columns without --raw")
    columns = (scorer.raw.columns if raw and scorer.raw else
               [f["name"] for f in scorer.features] + list(scorer.dense_features))
    needed = columns + [c for c in keep if c not in columns]
    dataset = ds.dataset(str(data), format="parquet")
    missing = sorted(set(needed) - set(dataset.schema.names))
    if missing:
        raise SystemExit(f"recmtl score: {data} lacks column(s) {missing} the bundle needs")
    writer = None
    rows, t0 = 0, time.perf_counter()
    for i, batch in enumerate(dataset.to_batches(columns=needed, batch_size=batch_rows)):
        table = pa.Table.from_batches([batch])
        where = f"{data} (batch {i})"
        scores = scorer.score_raw(table, where) if raw else scorer.score_rows(table, where)
        result = pa.table({c: table.column(c) for c in keep}
                          | {f"score_{k}": pa.array(v.numpy()) for k, v in scores.items()})
        if out is not None:
            writer = writer or pq.ParquetWriter(str(out), result.schema)
            writer.write_table(result)
        rows += table.num_rows
    if writer is not None:
        writer.close()
    took = time.perf_counter() - t0
    print(f"scored {rows:,} rows with {backend} in {took:.2f}s ({rows / took:,.0f} rows/s)"
          + (f" -> {out}" if out else ""))
    return rows
