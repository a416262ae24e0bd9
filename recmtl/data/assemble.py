"""Rows of decoded row groups -> one ``Batch``, gathering each column once into its final
buffer (the KJT's key-major values, the dense matrix, float labels).

A batch is a list of pieces ``(columns, rows)``: ``rows`` is a slice (in file order) or an
index array (a shuffled order). Shuffling costs no extra pass: the permutation is applied by
the same gather that builds the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.data.batch import Batch
from recmtl.data.columns import Columns
from recmtl.data.schema import FeatureSchema

Rows = slice | np.ndarray
Piece = tuple[Columns, Rows]


def num_rows(rows: Rows) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def split_rows(rows: Rows, k: int) -> tuple[Rows, Rows]:
    """The first ``k`` rows (all, if there are fewer) and the rest."""
    k = min(k, num_rows(rows))
    if isinstance(rows, slice):
        return slice(rows.start, rows.start + k), slice(rows.start + k, rows.stop)
    return rows[:k], rows[k:]


def _gather(dst: np.ndarray, src: np.ndarray, rows: Rows) -> None:
    if isinstance(rows, slice):
        dst[...] = src[rows]
    else:
        np.take(src, rows, axis=0, out=dst)


def _list_rows(offsets: np.ndarray, rows: Rows) -> tuple[Rows, np.ndarray]:
    """For a multi-valued column: which flat values the rows own, in order, and their lengths."""
    if isinstance(rows, slice):
        return (slice(int(offsets[rows.start]), int(offsets[rows.stop])),
                np.diff(offsets[rows.start:rows.stop + 1]))
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    ends = np.cumsum(lengths)
    # value i of the output is flat value starts[row] + (i - first output position of row)
    source = np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)
    return source, lengths


def assemble(pieces: list[Piece], schema: FeatureSchema) -> Batch:
    """``pieces`` (in order) -> a ``Batch`` of all their rows."""
    n = sum(num_rows(rows) for _, rows in pieces)
    lists = {s.name: [_list_rows(cols.offsets[s.name], rows) for cols, rows in pieces]
             for s in schema.sparse if s.multi_valued}
    sizes = [sum(int(lengths.sum()) for _, lengths in lists[s.name]) if s.multi_valued else n
             for s in schema.sparse]
    values = np.empty(sum(sizes), dtype=np.int64)
    lengths_out = np.ones(len(schema.sparse) * n, dtype=np.int32)
    at = 0
    for f, s in enumerate(schema.sparse):
        if s.multi_valued:
            row = f * n
            for (cols, _), (source, lengths) in zip(pieces, lists[s.name], strict=True):
                k = num_rows(source)
                _gather(values[at:at + k], cols.ids[s.name], source)
                lengths_out[row:row + len(lengths)] = lengths
                at, row = at + k, row + len(lengths)
        else:
            for cols, rows in pieces:
                k = num_rows(rows)
                _gather(values[at:at + k], cols.ids[s.name], rows)
                at += k
    first = pieces[0][0]
    dense = np.empty((n, first.dense.shape[1]), dtype=np.float32)
    labels = {c: np.empty(n, dtype=np.float32) for c in first.labels}
    extras = {c: np.empty(n, dtype=np.float32) for c in first.extras}
    group = None if first.group is None else np.empty(n, dtype=np.int64)
    at = 0
    for cols, rows in pieces:
        k = num_rows(rows)
        _gather(dense[at:at + k], cols.dense, rows)
        for c, out in labels.items():
            out[at:at + k] = cols.labels[c][rows]
        for c, out in extras.items():
            out[at:at + k] = cols.extras[c][rows]
        if group is not None:
            group[at:at + k] = cols.group[rows]  # type: ignore[index]
        at += k
    sparse = KeyedJaggedTensor(keys=[s.name for s in schema.sparse],
                               values=torch.from_numpy(values),
                               lengths=torch.from_numpy(lengths_out))
    return Batch(dense=torch.from_numpy(dense), sparse=sparse,
                 labels={c: torch.from_numpy(v) for c, v in labels.items()},
                 group=None if group is None else torch.from_numpy(group),
                 extras={c: torch.from_numpy(v) for c, v in extras.items()})
