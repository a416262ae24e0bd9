"""AUC and volume per value of a categorical column (a *slice*), within one task's rows.

A column with many values is cut to its ``max_slices`` largest slices by rows (ties broken by
value order); the remaining values are pooled into one trailing ``other`` entry whose AUC is
that of the pooled rows and whose ``other`` field says how many values it pools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recmtl.metrics.gauc import per_group_auc
from recmtl.metrics.ranking import Ranking


@dataclass(frozen=True)
class SliceColumn:
    """A categorical column as codes: row ``i`` has the value ``values[codes[i]]``.

    ``values`` are JSON scalars (int, float, str, bool, or None for a null).
    """

    codes: np.ndarray  # [n] int64 in [0, len(values))
    values: tuple[Any, ...]

    @classmethod
    def from_array(cls, x: np.ndarray) -> SliceColumn:
        """Factorises any sortable numpy array (ints, floats, strings)."""
        uniq, codes = np.unique(np.asarray(x), return_inverse=True)
        return cls(codes.ravel().astype(np.int64), tuple(v.item() if hasattr(v, "item") else v
                                                         for v in uniq))


def slice_table(labels: np.ndarray, r: Ranking, codes: np.ndarray, values: tuple[Any, ...],
                max_slices: int = 50) -> list[dict[str, Any]]:
    """``[{"value", "rows", "positives", "auc"}, ...]`` for the task rows ranked in ``r``, largest
    slice first, then at most one ``{"value": None, "other": k, ...}`` pooling the rest."""
    if max_slices < 1:
        raise ValueError(f"max_slices must be >= 1, got {max_slices}")
    counts = np.bincount(codes, minlength=len(values))
    present = np.flatnonzero(counts)
    by_volume = present[np.lexsort((present, -counts[present]))]
    kept = by_volume[:max_slices]
    # Kept values get codes 0..k-1 in table order; every other value shares code k.
    remap = np.full(len(values), len(kept), dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    per = per_group_auc(labels, r, remap[codes])
    table = []
    for code, rows, pos, auc in zip(per.codes, per.rows, per.positives, per.auc, strict=True):
        entry: dict[str, Any] = {"value": values[kept[code]] if code < len(kept) else None,
                                 "rows": int(rows), "positives": int(pos),
                                 "auc": None if np.isnan(auc) else float(auc)}
        if code == len(kept):
            entry["other"] = int(len(present) - len(kept))
        table.append(entry)
    return table
