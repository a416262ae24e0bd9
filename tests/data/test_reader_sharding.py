import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recmtl.data.reader import ParquetBatchReader, RowGroup, shard, split_evenly
from tests.data.helpers import SCHEMA, write_store


def _epoch(root, world, epoch=0, shuffle=False, batch_size=8, seed=0):
    per_rank = []
    for rank in range(world):
        reader = ParquetBatchReader(str(root), SCHEMA, batch_size, rank, world, shuffle, seed)
        batches = list(reader.epoch(epoch))
        assert len(batches) == reader.num_batches
        sizes = [b.size for b in batches]
        assert max(sizes) - min(sizes) <= 1
        per_rank.append(torch.cat([b.group for b in batches]).tolist())
    return per_rank


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_exactly_once_per_epoch(tmp_path, world, shuffle):
    total = write_store(tmp_path)
    for epoch in (0, 1):
        per_rank = _epoch(tmp_path, world, epoch, shuffle)
        seen = [r for rows in per_rank for r in rows]
        assert sorted(seen) == list(range(total))
        counts = {len(_) for _ in per_rank}
        assert max(counts) - min(counts) <= 1
    steps = {ParquetBatchReader(str(tmp_path), SCHEMA, 8, r, world).num_batches
             for r in range(world)}
    assert len(steps) == 1  # a sharded lookup is a collective: equal steps on every rank


def test_shuffle_is_seeded_and_changes_with_the_epoch(tmp_path):
    write_store(tmp_path)
    a = _epoch(tmp_path, 2, epoch=0, shuffle=True)
    assert a == _epoch(tmp_path, 2, epoch=0, shuffle=True)
    assert a != _epoch(tmp_path, 2, epoch=1, shuffle=True)
    assert a != _epoch(tmp_path, 2, epoch=0, shuffle=True, seed=1)
    assert _epoch(tmp_path, 1)[0] == list(range(100))  # no shuffle: file order


def test_kjt_layout_hand_worked(tmp_path):
    t = pa.table({
        "row_id": pa.array([10, 11, 12], pa.int64()),
        "item": pa.array([4, 0, 49], pa.int64()),
        "recent": pa.array([[1, 2], [], [9]], pa.list_(pa.int64())),
        "price": pa.array([0.5, -1.0, 2.0], pa.float32()),
        "click": pa.array([1, 0, 1], pa.int8()),
        "conversion": pa.array([1, 0, 0], pa.int8()),
    })
    pq.write_table(t, tmp_path / "one.parquet")
    (batch,) = ParquetBatchReader(str(tmp_path), SCHEMA, 3).epoch(0)
    assert batch.sparse.keys() == ["item", "recent"]
    # Key-major: the item lengths of all rows, then the recent lengths of all rows.
    assert batch.sparse.lengths().tolist() == [1, 1, 1, 2, 0, 1]
    assert batch.sparse.values().tolist() == [4, 0, 49, 1, 2, 9]
    assert batch.dense.tolist() == [[0.5], [-1.0], [2.0]]
    assert batch.labels["click"].tolist() == [1.0, 0.0, 1.0]
    assert batch.labels["conversion"].tolist() == [1.0, 0.0, 0.0]
    assert batch.group.tolist() == [10, 11, 12]


def test_file_uri_and_single_file(tmp_path):
    write_store(tmp_path)
    plain = _epoch(tmp_path, 1)[0]
    assert _epoch(f"file://{tmp_path}", 1)[0] == plain
    one = ParquetBatchReader(str(tmp_path / "part-00001.parquet"), SCHEMA, 64)
    assert torch.cat([b.group for b in one.epoch(0)]).tolist() == list(range(37, 87))


def test_split_evenly_and_shard_hand_worked():
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(6, 3) == [2, 2, 2]
    groups = [RowGroup("a", 0, 5), RowGroup("a", 1, 5), RowGroup("b", 0, 4)]  # 14 rows
    order = np.array([2, 0, 1])  # b0 (4 rows), a0 (5), a1 (5)
    # rank 0 of 2 takes global rows [0, 7): all of b0, then a0 rows [0, 3)
    assert [(s.row_group.path, s.row_group.index, s.start, s.stop)
            for s in shard(groups, 0, 2, order)] == [("b", 0, 0, 4), ("a", 0, 0, 3)]
    assert [(s.row_group.path, s.row_group.index, s.start, s.stop)
            for s in shard(groups, 1, 2, order)] == [("a", 0, 3, 5), ("a", 1, 0, 5)]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("start", [0, 1, 3, 6, 7])
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(tmp_path, shuffle, start):
    write_store(tmp_path)
    for rank in range(2):
        reader = ParquetBatchReader(str(tmp_path), SCHEMA, 8, rank, 2, shuffle, seed=5)
        full = list(reader.epoch(3))
        resumed = list(reader.epoch(3, start_batch=start))
        assert len(resumed) == len(full) - start
        for a, b in zip(full[start:], resumed, strict=True):
            assert torch.equal(a.group, b.group)
            assert torch.equal(a.sparse.values(), b.sparse.values())
        with pytest.raises(ValueError, match="outside"):
            reader.epoch(3, start_batch=reader.num_batches + 1)


def test_fingerprint_changes_with_files_not_with_reads(tmp_path):
    from recmtl.data.fingerprint import data_fingerprint

    write_store(tmp_path / "train")
    first = data_fingerprint(str(tmp_path))
    _epoch(tmp_path / "train", 1)
    assert data_fingerprint(str(tmp_path)) == first == data_fingerprint(f"file://{tmp_path}")
    write_store(tmp_path / "train", rows_per_file=(37, 50, 14))
    assert data_fingerprint(str(tmp_path)) != first
