"""An epoch begun on one number of ranks and finished on another trains every row once."""

import pytest
import torch

from recmtl.data.reader import ParquetBatchReader
from recmtl.data.reshard import rest_of_epoch, rows_done
from tests.data.helpers import SCHEMA, write_store


def _rows(batches):
    return [r for b in batches for r in b.group.tolist()]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(("old", "new", "done"), [(2, 1, 3), (3, 2, 1), (1, 3, 5), (2, 3, 0),
                                                  (2, 1, 7)])
def test_rows_before_and_after_a_world_change_cover_the_epoch_once(tmp_path, shuffle, old, new,
                                                                    done):
    total = write_store(tmp_path)
    batch = 16  # global: 16 // world rows per rank and batch, as the worker splits it
    before = []
    for rank in range(old):
        reader = ParquetBatchReader(str(tmp_path), SCHEMA, -(-batch // old), rank, old,
                                    shuffle, seed=3)
        it = reader.epoch(2)
        before += _rows(next(it) for _ in range(done))
    after, steps, sizes = [], set(), []
    for rank in range(new):
        reader = ParquetBatchReader(str(tmp_path), SCHEMA, -(-batch // new), rank, new,
                                    shuffle, seed=3, prefetch=2 if rank else 0)
        batches, n, left = rest_of_epoch(reader, 2, old, -(-batch // old), done)
        got = list(batches)
        assert len(got) == n and left == total - len(before)
        steps.add(n)
        sizes += [b.size for b in got]
        after += _rows(got)
    assert sorted(before + after) == list(range(total))  # group = the row's index
    assert len(steps) == 1  # every new rank runs the same number of steps (collectives)
    assert not sizes or max(sizes) - min(sizes) <= 1  # (2, 1, 7): the epoch was done
    assert sum(rows_done(reader, old, -(-batch // old), done)) == len(before)


def test_rows_done_hand_worked(tmp_path):
    write_store(tmp_path)  # 100 rows
    reader = ParquetBatchReader(str(tmp_path), SCHEMA, 8)
    # 2 ranks of 50 rows in ceil(50 / 8) = 7 batches: 8, 7, 7, 7, 7, 7, 7
    assert rows_done(reader, 2, 8, 3) == [22, 22]
    # 3 ranks of 33, 33, 34 rows in ceil(34 / 6) = 6 batches: 6, 6, 6, 5, 5, 5 / 6, 6, 6, 6, 5, 5
    assert rows_done(reader, 3, 6, 4) == [23, 23, 24]


def test_same_world_rest_matches_the_plain_resume_rows(tmp_path):
    write_store(tmp_path)
    readers = [ParquetBatchReader(str(tmp_path), SCHEMA, 8, r, 2, True, seed=1) for r in range(2)]
    plain = sorted(r for reader in readers for r in _rows(reader.epoch(0, 4)))
    rest = sorted(r for reader in readers for r in _rows(rest_of_epoch(reader, 0, 2, 8, 4)[0]))
    assert rest == plain
    assert torch.tensor(rest).unique().numel() == len(rest)
