"""A decoded row group as numpy arrays: what the reader validates, shuffles and batches.

A row group is decoded from Arrow once; when shuffling, its rows are put in a seeded order
with one gather per column (``take``), while the row group is hot in cache; batches are then
contiguous row ranges (``recmtl.data.assemble``). A multi-valued column keeps CSR
``offsets [n + 1]`` (from 0) and flat ``values``.
"""

from __future__ import annotations

from dataclasses import dataclass

import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recmtl.data.schema import FeatureSchema


@dataclass
class Columns:
    n: int
    ids: dict[str, np.ndarray]  # int64: [n] for single-valued, flat values for multi-valued
    offsets: dict[str, np.ndarray]  # multi-valued features only: [n + 1] int64, from 0
    dense: np.ndarray  # [n, D] float32
    labels: dict[str, np.ndarray]  # [n] as stored (integer or bool labels, regression targets)
    group: np.ndarray | None
    extras: dict[str, np.ndarray]

    @classmethod
    def decode(cls, table: pa.Table, schema: FeatureSchema) -> Columns:
        """Arrow -> numpy. Nulls must have been rejected before (see ``validate``)."""
        n = table.num_rows
        ids, offsets = {}, {}
        for s in schema.sparse:
            col = table.column(s.name)
            if s.multi_valued:
                offsets[s.name], ids[s.name] = _csr(col)
            else:
                ids[s.name] = col.to_numpy().astype(np.int64, copy=False)
        dense = np.empty((n, len(schema.dense)), dtype=np.float32)
        for j, name in enumerate(schema.dense):
            dense[:, j] = table.column(name).to_numpy()
        return cls(
            n=n, ids=ids, offsets=offsets, dense=dense,
            labels={c: table.column(c).to_numpy() for c in (*schema.labels, *schema.targets)},
            group=None if schema.group is None else table.column(schema.group).to_numpy(),
            extras={c: table.column(c).to_numpy() for c in schema.extras},
        )

    def take(self, order: np.ndarray) -> Columns:
        """The rows put in ``order``, a permutation of ``range(n)`` (the reader's seeded one)."""
        ids = {name: _take(v, order) for name, v in self.ids.items() if name not in self.offsets}
        offsets = {}
        for name, off in self.offsets.items():
            offsets[name], ids[name] = _list_take(off, self.ids[name], order)
        dense = np.empty((len(order), self.dense.shape[1]), dtype=self.dense.dtype)
        np.take(self.dense, order, axis=0, out=dense, mode="clip")
        return Columns(
            n=len(order), ids=ids, offsets=offsets, dense=dense,
            labels={c: _take(v, order) for c, v in self.labels.items()},
            group=None if self.group is None else _take(self.group, order),
            extras={c: _take(v, order) for c, v in self.extras.items()},
        )


def _csr(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list column's offsets (from 0) and flat values, read from Arrow's own offsets; a
    sliced array's offsets start past 0 and its values buffer holds rows outside the slice.
    A null list is an empty one (Arrow lets a null slot span values, so those are dropped)."""
    lists = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if lists.null_count:
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets, lists.flatten().to_numpy().astype(np.int64, copy=False)
    raw = lists.offsets.to_numpy()
    first, last = int(raw[0]), int(raw[-1])
    values = lists.values.slice(first, last - first).to_numpy().astype(np.int64, copy=False)
    return raw.astype(np.int64) - first, values


def _take(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    # mode="clip" skips numpy's buffered bounds check; ``order`` is the reader's own
    # permutation of the row indices, never data, so nothing is ever clipped.
    out = np.empty(len(order), dtype=values.dtype)
    np.take(values, order, out=out, mode="clip")
    return out


def _list_take(offsets: np.ndarray, values: np.ndarray, order: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """A multi-valued column's rows in ``order`` (a permutation: the values keep their total):
    their offsets (from 0) and flat values, by fbgemm's jagged permute (twice numpy's
    repeat-and-gather here)."""
    lengths = torch.from_numpy(np.diff(offsets).astype(np.int32))
    if not values.flags.writeable:  # Arrow's buffer: torch warns on read-only memory
        values = values.copy()
    new_lengths, new_values, _ = torch.ops.fbgemm.permute_1D_sparse_data(
        torch.from_numpy(order.astype(np.int32)), lengths, torch.from_numpy(values), None,
        len(values))
    new_offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(new_lengths.numpy(), out=new_offsets[1:])
    return new_offsets, new_values.numpy()
