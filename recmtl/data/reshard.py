"""The rest of an epoch on a different number of ranks than it started on (a lost node).

An epoch begun on W ranks and checkpointed after ``b`` batches has trained, on each old rank
r, the first rows of r's share in r's training order (``ParquetBatchReader.rows_of``). What is
left is, per old rank, the rest of that stream. The new W' ranks lay those rests end to end
(old rank 0's first) and each takes a contiguous W'-th of them, batched evenly over the same
number of steps on every new rank: every row of the epoch is trained exactly once, whatever
W and W' are. Rows keep their old order; only who trains them changes.

    batches, steps, rows = rest_of_epoch(reader, epoch=1, world=2, batch_size=256, batches=20)
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from recmtl.data.assemble import Piece, num_rows, split_rows
from recmtl.data.batch import Batch
from recmtl.data.reader import ParquetBatchReader, _prefetched, batched, split_evenly


def rows_done(reader: ParquetBatchReader, world: int, batch_size: int, batches: int) -> list[int]:
    """Rows each of ``world`` ranks (``batch_size`` each per batch) had trained after
    ``batches`` batches of an epoch, rank by rank."""
    done = []
    for rank in range(world):
        old = reader.layout(rank, world, batch_size)
        done.append(sum(split_evenly(old.rows_on_rank(), old.num_batches)[:batches]))
    return done


def rest_of_epoch(reader: ParquetBatchReader, epoch: int, world: int, batch_size: int,
                  batches: int) -> tuple[Iterator[Batch], int, int]:
    """``reader``'s rank's batches of what ``world`` ranks (``batch_size`` rows each per batch)
    left of ``epoch`` after ``batches`` batches; also the steps every rank runs and the rows
    left over all ranks."""
    olds = [reader.layout(rank, world, batch_size) for rank in range(world)]
    done = rows_done(reader, world, batch_size, batches)
    left = [old.rows_on_rank() - d for old, d in zip(olds, done, strict=True)]
    total = sum(left)
    lo = reader.rank * total // reader.world_size
    hi = (reader.rank + 1) * total // reader.world_size
    steps = math.ceil(math.ceil(total / reader.world_size) / reader.batch_size)

    def pieces() -> Iterator[Piece]:
        start = 0  # where old rank r's rest begins in the rests laid end to end
        for old, d, n in zip(olds, done, left, strict=True):
            a, b = max(lo, start), min(hi, start + n)
            if a < b:
                yield from _take(old.rows_of(epoch, d + a - start), b - a)
            start += n

    out = batched(pieces(), split_evenly(hi - lo, steps) if steps else [], reader.schema)
    return (_prefetched(out, reader.prefetch) if reader.prefetch else out), steps, total


def _take(pieces: Iterator[Piece], rows: int) -> Iterator[Piece]:
    """The first ``rows`` rows of ``pieces``; the stream is closed after them."""
    try:
        for cols, piece_rows in pieces:
            head = split_rows(piece_rows, rows)[0]
            rows -= num_rows(head)
            yield cols, head
            if not rows:
                return
    finally:
        pieces.close()  # type: ignore[attr-defined]
