"""A decoded run of rows as numpy arrays: what the reader validates, shuffles and slices.

A row group is decoded from Arrow once; shuffling is a numpy gather and batching is slicing
(views, no copies). A multi-valued column keeps CSR ``offsets [n + 1]`` and flat ``values``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recmtl.data.schema import FeatureSchema


@dataclass
class Columns:
    n: int
    ids: dict[str, np.ndarray]  # int64: [n] for single-valued, flat values for multi-valued
    offsets: dict[str, np.ndarray]  # multi-valued features only: [n + 1] int64, from 0
    dense: np.ndarray  # [n, D] float32
    labels: dict[str, np.ndarray]  # [n] (integer or bool, as stored)
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
                lists = col.combine_chunks()
                lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
                offsets[s.name] = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
                ids[s.name] = lists.flatten().to_numpy().astype(np.int64, copy=False)
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

    def _map(self, rows: slice | np.ndarray, list_ids: dict[str, np.ndarray],
             list_offsets: dict[str, np.ndarray], n: int) -> Columns:
        return Columns(
            n=n,
            ids={k: list_ids[k] if k in self.offsets else v[rows] for k, v in self.ids.items()},
            offsets=list_offsets,
            dense=self.dense[rows],
            labels={k: v[rows] for k, v in self.labels.items()},
            group=None if self.group is None else self.group[rows],
            extras={k: v[rows] for k, v in self.extras.items()},
        )

    def slice(self, start: int, stop: int) -> Columns:
        """Rows ``[start, stop)`` as views."""
        ids, offsets = {}, {}
        for k, off in self.offsets.items():
            ids[k] = self.ids[k][off[start]:off[stop]]
            offsets[k] = off[start:stop + 1] - off[start]
        return self._map(slice(start, stop), ids, offsets, stop - start)

    def take(self, rows: np.ndarray) -> Columns:
        """Rows in the order of ``rows`` (a gather, used for shuffling)."""
        ids, offsets = {}, {}
        for k, off in self.offsets.items():
            lengths = off[1:][rows] - off[:-1][rows]
            new_off = np.concatenate([[0], np.cumsum(lengths)])
            # Position i of the output reads old value off[row] + (i - new_off[row's slot]).
            source = np.repeat(off[:-1][rows] - new_off[:-1], lengths) + np.arange(new_off[-1])
            ids[k] = self.ids[k][source]
            offsets[k] = new_off
        return self._map(rows, ids, offsets, len(rows))

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        offsets = {}
        for k in first.offsets:
            shifted = [p.offsets[k][1:] + base for p, base in zip(
                parts, np.cumsum([0] + [p.offsets[k][-1] for p in parts[:-1]]), strict=True)]
            offsets[k] = np.concatenate([[0], *shifted])
        return Columns(
            n=sum(p.n for p in parts),
            ids={k: np.concatenate([p.ids[k] for p in parts]) for k in first.ids},
            offsets=offsets,
            dense=np.concatenate([p.dense for p in parts]),
            labels={k: np.concatenate([p.labels[k] for p in parts]) for k in first.labels},
            group=None if first.group is None else np.concatenate([p.group for p in parts]),  # type: ignore[misc]
            extras={k: np.concatenate([p.extras[k] for p in parts]) for k in first.extras},
        )
