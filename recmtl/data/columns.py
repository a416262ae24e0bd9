"""A decoded row group as numpy arrays: what the reader validates and batches.

A row group is decoded from Arrow once; ``recmtl.data.assemble`` then gathers batches from it
(in a shuffled order or not) straight into their final buffers. A multi-valued column keeps
CSR ``offsets [n + 1]`` and flat ``values``.
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
