"""What every synthetic store shares: the splits, the part-file writer, the oracle's AUC."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ("train", "valid", "test")


def write_split(out: Path, rows: int, rows_per_file: int, row_group_size: int, first_id: int,
                rng: np.random.Generator,
                sample: Callable[[int, np.random.Generator, int], pa.Table]) -> Iterator[pa.Table]:
    """Replaces ``out/part-*.parquet`` with ``rows`` rows, ``rows_per_file`` per file, each file
    ``sample(n, rng, first_id_of_its_rows)``; yields every table once written (the generators of
    the other store kinds summarise them). Consume it whole: files are written as it runs."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    for part, start in enumerate(range(0, rows, rows_per_file)):
        table = sample(min(rows_per_file, rows - start), rng, first_id + start)
        pq.write_table(table, out / f"part-{part:05d}.parquet", row_group_size=row_group_size)
        yield table


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties at their average rank; NaN when
    only one class is present."""
    labels = np.asarray(labels, bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based average rank of each distinct value: its last rank minus (count - 1) / 2.
    average = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = average[inverse][labels].sum()
    return float((rank_sum - pos * (pos + 1) / 2.0) / (pos * neg))
