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

import copy
import math
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recmtl.data.assemble import Piece, assemble, num_rows, split_rows
from recmtl.data.batch import Batch
from recmtl.data.columns import Columns
from recmtl.data.files import list_parquet_files
from recmtl.data.schema import FeatureSchema
from recmtl.data.validate import check_file_schema, check_nulls, check_values
from recmtl.errors import DataError


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


def discover(uri: str, schema: FeatureSchema) -> tuple[pafs.FileSystem, list[RowGroup]]:
    """Lists the Parquet files under ``uri`` (sorted) and their row groups; checks each schema."""
    fs, paths = list_parquet_files(uri)
    row_groups = []
    seen: dict[str, tuple[str, pa.DataType]] = {}  # column -> its first file and type
    for path in paths:
        try:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
                file_schema = meta.schema.to_arrow_schema()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from e
        check_file_schema(path, file_schema, schema, seen)
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
        prefetch: batches built ahead in a background thread (0: build on demand).
    """

    def __init__(self, uri: str, schema: FeatureSchema, batch_size: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = False, seed: int = 0,
                 prefetch: int = 0) -> None:
        self.uri = uri
        self.schema = schema
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.prefetch = prefetch
        self.fs, self.row_groups = discover(uri, schema)
        self.total_rows = sum(rg.num_rows for rg in self.row_groups)
        if self.total_rows < world_size:
            raise DataError(f"{uri}: {self.total_rows} rows cannot feed {world_size} ranks")
        self.num_batches = math.ceil(math.ceil(self.total_rows / world_size) / batch_size)

    def layout(self, rank: int, world_size: int, batch_size: int) -> ParquetBatchReader:
        """The same data as rank ``rank`` of ``world_size`` would read it (files not relisted)."""
        other = copy.copy(self)
        other.rank, other.world_size, other.batch_size = rank, world_size, batch_size
        other.num_batches = math.ceil(math.ceil(self.total_rows / world_size) / batch_size)
        return other

    def rows_on_rank(self) -> int:
        r, w, n = self.rank, self.world_size, self.total_rows
        return (r + 1) * n // w - r * n // w

    def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[Batch]:
        """This rank's batches of ``epoch`` from batch ``start_batch`` on (a resume: exactly
        the batches an uninterrupted run would still produce), built ``prefetch`` ahead."""
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch {start_batch} outside [0, {self.num_batches}]")
        batches = self._batches(epoch, start_batch)
        return _prefetched(batches, self.prefetch) if self.prefetch else batches

    def _batches(self, epoch: int, start_batch: int) -> Iterator[Batch]:
        sizes = split_evenly(self.rows_on_rank(), self.num_batches)
        return batched(self.rows_of(epoch, sum(sizes[:start_batch])), sizes[start_batch:],
                       self.schema)

    def rows_of(self, epoch: int, skip_rows: int = 0) -> Iterator[Piece]:
        """This rank's rows of ``epoch`` in training order, after the first ``skip_rows``."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.row_groups)) if self.shuffle else np.arange(
            len(self.row_groups))
        slices = shard(self.row_groups, self.rank, self.world_size, order)
        return self._read(slices, rng, skip_rows)

    def _read(self, slices: list[Slice], rng: np.random.Generator, skip_rows: int = 0
              ) -> Iterator[Piece]:
        """Decodes and validates each slice of a row group, puts its rows in a seeded order when
        shuffling (one gather per column, while the slice is hot in cache), and yields it with
        the range of its rows still to batch. The next slice's Parquet read (GIL-free in Arrow)
        runs in a thread while this one is decoded. The first ``skip_rows`` rows (in shuffled
        order) are dropped; slices wholly inside them are not read, but still draw their
        permutation so the RNG stays in step."""
        while slices and skip_rows >= slices[0].stop - slices[0].start:
            n = slices[0].stop - slices[0].start
            if self.shuffle:
                rng.permutation(n)
            skip_rows -= n
            slices = slices[1:]
        columns = self.schema.columns
        files: dict[str, pq.ParquetFile] = {}
        # This thread reads while the caller's thread decodes and batches: Arrow's own decode
        # threads only pay where cores are left over (on 2 cores they cost a quarter of its rows/s).
        arrow_threads = _usable_cores() > 2

        def read(s: Slice) -> pa.Table:
            path = s.row_group.path
            if path not in files:
                files[path] = pq.ParquetFile(self.fs.open_input_file(path))
            try:
                table = files[path].read_row_group(s.row_group.index, columns=columns,
                                                    use_threads=arrow_threads)
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(f"{path}, row group {s.row_group.index}: cannot decode ({e})") from e
            return table.slice(s.start, s.stop - s.start)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="recmtl-read") as pool:
            ahead = pool.submit(read, slices[0]) if slices else None
            for i, s in enumerate(slices):
                assert ahead is not None
                table = ahead.result()
                ahead = pool.submit(read, slices[i + 1]) if i + 1 < len(slices) else None
                where = f"{s.row_group.path}, row group {s.row_group.index}"
                check_nulls(table, self.schema, where, s.start)
                cols = Columns.decode(table, self.schema)
                check_values(cols, self.schema, where, s.start)
                if self.shuffle:
                    cols = cols.take(rng.permutation(cols.n))
                rows = slice(0, cols.n)
                if skip_rows:
                    rows, skip_rows = split_rows(rows, skip_rows)[1], 0
                yield cols, rows


def batched(pieces: Iterator[Piece], sizes: list[int], schema: FeatureSchema) -> Iterator[Batch]:
    """``pieces`` cut into batches of ``sizes`` rows, in order; every row is used."""
    pending: deque[Piece] = deque()  # rows decoded but not yet batched, in order
    available, step = 0, 0
    for piece in pieces:
        pending.append(piece)
        available += num_rows(piece[1])
        while step < len(sizes) and available >= sizes[step]:
            need, parts = sizes[step], []
            while need:
                cols, rows = pending[0]
                if num_rows(rows) <= need:
                    parts.append(pending.popleft())
                    need -= num_rows(rows)
                else:
                    head, rest = split_rows(rows, need)
                    parts.append((cols, head))
                    pending[0] = (cols, rest)
                    need = 0
            yield assemble(parts, schema)
            available -= sizes[step]
            step += 1
    if step != len(sizes) or available:
        raise RuntimeError(f"reader bug: {step}/{len(sizes)} batches, {available} rows left")


def _usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_DONE = object()


def _prefetched(batches: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Runs ``batches`` in a thread, ``depth`` items ahead; re-raises its errors here. When the
    consumer stops early (max_steps, an error, the iterator dropped), the thread closes
    ``batches`` (so the read-ahead pool finishes its read) and is joined: no thread is left
    inside Arrow or numpy when the process exits."""
    out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, raised in its thread
            put(e)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, daemon=True, name="recmtl-prefetch")
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
