"""Row ranges of decoded row groups -> one ``Batch``, copying each column once into its final
buffer (the KJT's key-major values, the dense matrix, float labels).

A batch is a list of pieces ``(columns, rows)``, ``rows`` a contiguous range of the row
group's rows. A shuffled row group has already been put in its seeded order
(``Columns.take``), so a batch is always plain copies of ranges.
"""

from __future__ import annotations

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.data.batch import Batch
from recmtl.data.columns import Columns
from recmtl.data.schema import FeatureSchema

Piece = tuple[Columns, slice]


def num_rows(rows: slice) -> int:
    return rows.stop - rows.start


def split_rows(rows: slice, k: int) -> tuple[slice, slice]:
    """The first ``k`` rows (all, if there are fewer) and the rest."""
    k = min(k, num_rows(rows))
    return slice(rows.start, rows.start + k), slice(rows.start + k, rows.stop)


def assemble(pieces: list[Piece], schema: FeatureSchema) -> Batch:
    """``pieces`` (in order) -> a ``Batch`` of all their rows."""
    n = sum(num_rows(rows) for _, rows in pieces)
    # each piece's range of flat values, per feature: the rows themselves when single-valued
    spans = [[(rows.start, rows.stop) if s.name not in cols.offsets else
              (int(cols.offsets[s.name][rows.start]), int(cols.offsets[s.name][rows.stop]))
              for cols, rows in pieces] for s in schema.sparse]
    values = np.empty(sum(b - a for f in spans for a, b in f), dtype=np.int64)
    lengths = np.ones(len(schema.sparse) * n, dtype=np.int32)
    at = 0
    for f, s in enumerate(schema.sparse):
        row = f * n
        for (cols, rows), (a, b) in zip(pieces, spans[f], strict=True):
            values[at:at + b - a] = cols.ids[s.name][a:b]
            if s.multi_valued:
                lengths[row:row + num_rows(rows)] = np.diff(cols.offsets[s.name][rows.start:rows.stop + 1])
            at, row = at + b - a, row + num_rows(rows)
    first = pieces[0][0]
    dense = np.empty((n, first.dense.shape[1]), dtype=np.float32)
    labels = {c: np.empty(n, dtype=np.float32) for c in first.labels}
    extras = {c: np.empty(n, dtype=np.float32) for c in first.extras}
    group = None if first.group is None else np.empty(n, dtype=np.int64)
    at = 0
    for cols, rows in pieces:
        k = num_rows(rows)
        dense[at:at + k] = cols.dense[rows]
        for c, out in labels.items():
            out[at:at + k] = cols.labels[c][rows]
        for c, out in extras.items():
            out[at:at + k] = cols.extras[c][rows]
        if group is not None:
            group[at:at + k] = cols.group[rows]  # type: ignore[index]
        at += k
    sparse = KeyedJaggedTensor(keys=[s.name for s in schema.sparse],
                               values=torch.from_numpy(values),
                               lengths=torch.from_numpy(lengths))
    return Batch(dense=torch.from_numpy(dense), sparse=sparse,
                 labels={c: torch.from_numpy(v) for c, v in labels.items()},
                 group=None if group is None else torch.from_numpy(group),
                 extras={c: torch.from_numpy(v) for c, v in extras.items()})
