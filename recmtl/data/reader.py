"""Streams Parquet row groups into ``Batch``es, one shard per rank, never the whole dataset.

Sharding: every row group of every part file is a unit. Each epoch the units are put in a
seeded order (shuffled when asked), laid end to end, and rank r takes the contiguous global
rows ``[r * N // W, (r + 1) * N // W)``; so every row is read exactly once per epoch across the
W ranks, and a rank opens only the row groups its range touches. All ranks run the same number
of steps (a sharded embedding lookup is a collective): ``ceil(ceil(N / W) / batch_size)``,
with each rank's rows split evenly over those steps, so batch sizes differ by at most one
row from the mean and no row is dropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.data.batch import Batch
from recmtl.data.schema import FeatureSchema
from recmtl.data.validate import DataError, check_file_schema, check_rows


@dataclass(frozen=True)
class RowGroup:
    path: str
    index: int
    num_rows: int


@dataclass(frozen=True)
class Slice:
    """Rows ``[start, stop)`` of one row group."""

    row_group: RowGroup
    start: int
    stop: int


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A local path or any URI pyarrow understands (``file://``, ``s3://``, ``gs://``...)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def discover(uri: str, schema: FeatureSchema) -> tuple[pafs.FileSystem, list[RowGroup]]:
    """Lists the Parquet files under ``uri`` (sorted) and their row groups; checks each schema."""
    fs, base = open_filesystem(uri)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"{uri}: no such file or directory")
    if info.type == pafs.FileType.File:
        paths = [base]
    else:
        selector = pafs.FileSelector(base, recursive=True)
        paths = sorted(i.path for i in fs.get_file_info(selector)
                       if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    if not paths:
        raise DataError(f"{uri}: no .parquet files found")
    row_groups = []
    for path in paths:
        try:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
                file_schema = meta.schema.to_arrow_schema()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from e
        check_file_schema(path, file_schema, schema)
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if n:
                row_groups.append(RowGroup(path, i, n))
    if not row_groups:
        raise DataError(f"{uri}: the Parquet files hold no rows")
    return fs, row_groups


def shard(row_groups: list[RowGroup], rank: int, world_size: int, order: np.ndarray) -> list[Slice]:
    """Rank ``rank``'s contiguous share of the rows, with row groups laid out in ``order``."""
    total = sum(rg.num_rows for rg in row_groups)
    lo, hi = rank * total // world_size, (rank + 1) * total // world_size
    slices, pos = [], 0
    for i in order:
        rg = row_groups[i]
        a, b = max(lo, pos), min(hi, pos + rg.num_rows)
        if a < b:
            slices.append(Slice(rg, a - pos, b - pos))
        pos += rg.num_rows
    return slices


def split_evenly(rows: int, steps: int) -> list[int]:
    """``rows`` split into ``steps`` sizes that differ by at most one."""
    base, extra = divmod(rows, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


class ParquetBatchReader:
    """Iterates one rank's batches of one epoch: ``for batch in reader.epoch(e): ...``.

    Args:
        uri: a directory of Parquet files (local path or pyarrow filesystem URI), or one file.
        schema: column roles and id ranges.
        batch_size: target rows per batch on this rank.
        rank, world_size: this reader's shard.
        shuffle: seeded per-epoch shuffle of row-group order and of rows within a row group.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
    """

    def __init__(self, uri: str, schema: FeatureSchema, batch_size: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = False, seed: int = 0) -> None:
        self.uri = uri
        self.schema = schema
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.fs, self.row_groups = discover(uri, schema)
        self.total_rows = sum(rg.num_rows for rg in self.row_groups)
        if self.total_rows < world_size:
            raise DataError(f"{uri}: {self.total_rows} rows cannot feed {world_size} ranks")
        self.num_batches = math.ceil(math.ceil(self.total_rows / world_size) / batch_size)

    def rows_on_rank(self) -> int:
        r, w, n = self.rank, self.world_size, self.total_rows
        return (r + 1) * n // w - r * n // w

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.row_groups)) if self.shuffle else np.arange(
            len(self.row_groups))
        slices = shard(self.row_groups, self.rank, self.world_size, order)
        sizes = split_evenly(self.rows_on_rank(), self.num_batches)
        pending: list[pa.Table] = []
        have = 0
        step = 0
        for table in self._read(slices, rng):
            pending.append(table)
            have += table.num_rows
            while step < len(sizes) and have >= sizes[step]:
                merged = pa.concat_tables(pending)
                yield to_batch(merged.slice(0, sizes[step]), self.schema)
                rest = merged.slice(sizes[step])
                pending, have = [rest], rest.num_rows
                step += 1
        if step != len(sizes) or have:
            raise RuntimeError(f"reader bug: {step}/{len(sizes)} batches, {have} rows left")

    def _read(self, slices: list[Slice], rng: np.random.Generator) -> Iterator[pa.Table]:
        columns = self.schema.columns
        files: dict[str, pq.ParquetFile] = {}
        for s in slices:
            path = s.row_group.path
            if path not in files:
                files[path] = pq.ParquetFile(self.fs.open_input_file(path))
            where = f"{path}, row group {s.row_group.index}"
            try:
                table = files[path].read_row_group(s.row_group.index, columns=columns)
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(f"{where}: cannot decode ({e})") from e
            table = table.slice(s.start, s.stop - s.start)
            check_rows(table, self.schema, where, s.start)
            if self.shuffle:
                table = table.take(pa.array(rng.permutation(table.num_rows)))
            yield table


def to_batch(table: pa.Table, schema: FeatureSchema) -> Batch:
    """Arrow columns -> ``Batch``, vectorised (no per-row Python)."""
    lengths, values = [], []
    n = table.num_rows
    for s in schema.sparse:
        col = table.column(s.name)
        if s.multi_valued:
            lists = col.combine_chunks()
            lengths.append(pc.list_value_length(lists).to_numpy(zero_copy_only=False))
            values.append(lists.flatten().to_numpy())
        else:
            lengths.append(np.ones(n, dtype=np.int64))
            values.append(col.to_numpy())
    sparse = KeyedJaggedTensor(
        keys=[s.name for s in schema.sparse],
        values=torch.from_numpy(np.concatenate(values).astype(np.int64, copy=False)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32, copy=False)),
    )
    dense = np.empty((n, len(schema.dense)), dtype=np.float32)
    for j, col in enumerate(schema.dense):
        dense[:, j] = table.column(col).to_numpy()
    return Batch(
        dense=torch.from_numpy(dense),
        sparse=sparse,
        labels={c: _float(table, c) for c in schema.labels},
        group=None if schema.group is None else torch.from_numpy(
            np.array(table.column(schema.group).to_numpy(), dtype=np.int64)),
        extras={c: _float(table, c) for c in schema.extras},
    )


def _float(table: pa.Table, col: str) -> torch.Tensor:
    return torch.from_numpy(table.column(col).to_numpy().astype(np.float32))
