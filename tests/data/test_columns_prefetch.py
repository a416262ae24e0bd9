import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recmtl.data.columns import Columns
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.validate import DataError
from tests.data.helpers import SCHEMA, table, write_store


def _cols():
    t = pa.table({
        "row_id": pa.array([0, 1, 2, 3], pa.int64()),
        "item": pa.array([5, 6, 7, 8], pa.int64()),
        "recent": pa.array([[1, 2], [], [3], [4, 5, 6]], pa.list_(pa.int64())),
        "price": pa.array([0.0, 1.0, 2.0, 3.0], pa.float32()),
        "click": pa.array([1, 0, 1, 1], pa.int8()),
        "conversion": pa.array([0, 0, 1, 0], pa.int8()),
    })
    return Columns.decode(t, SCHEMA)


def _lists(c):
    off = c.offsets["recent"]
    return [c.ids["recent"][off[i]:off[i + 1]].tolist() for i in range(c.n)]


def test_take_gathers_lists_hand_worked():
    c = _cols().take(np.array([3, 1, 0, 2]))
    assert _lists(c) == [[4, 5, 6], [], [1, 2], [3]]
    assert c.ids["item"].tolist() == [8, 6, 5, 7]
    assert c.dense[:, 0].tolist() == [3.0, 1.0, 0.0, 2.0]
    assert c.group.tolist() == [3, 1, 0, 2]


def test_slice_and_concat_hand_worked():
    c = _cols()
    a, b = c.slice(0, 1), c.slice(1, 4)
    assert _lists(b) == [[], [3], [4, 5, 6]] and b.offsets["recent"].tolist() == [0, 0, 1, 4]
    joined = Columns.concat([b, a])
    assert _lists(joined) == [[], [3], [4, 5, 6], [1, 2]]
    assert joined.labels["click"].tolist() == [0, 1, 1, 1]


def test_prefetch_yields_the_same_batches(tmp_path):
    write_store(tmp_path)
    plain = ParquetBatchReader(str(tmp_path), SCHEMA, 8, shuffle=True, seed=3)
    ahead = ParquetBatchReader(str(tmp_path), SCHEMA, 8, shuffle=True, seed=3, prefetch=2)
    for x, y in zip(plain.epoch(1), ahead.epoch(1), strict=True):
        assert torch.equal(x.sparse.values(), y.sparse.values())
        assert torch.equal(x.sparse.lengths(), y.sparse.lengths())
        assert torch.equal(x.dense, y.dense) and torch.equal(x.group, y.group)


def test_prefetch_raises_errors_in_the_consumer(tmp_path):
    write_store(tmp_path, rows_per_file=(20,))
    t = table(range(20, 30))
    bad = t.set_column(t.schema.get_field_index("item"), "item", pa.array([99] * 10))
    pq.write_table(bad, tmp_path / "part-00009.parquet")
    reader = ParquetBatchReader(str(tmp_path), SCHEMA, 8, prefetch=2)
    with pytest.raises(DataError, match="part-00009.parquet, row group 0, column 'item'"):
        list(reader.epoch(0))


def test_stopping_early_releases_the_prefetch_thread(tmp_path):
    import threading

    write_store(tmp_path)
    reader = ParquetBatchReader(str(tmp_path), SCHEMA, 4, prefetch=1)
    batches = reader.epoch(0)
    next(batches)
    batches.close()  # as the training loop does when it reaches max_steps
    for t in threading.enumerate():
        if t.name == "recmtl-prefetch":
            t.join(timeout=5)
            assert not t.is_alive()
