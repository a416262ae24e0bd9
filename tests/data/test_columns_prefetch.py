import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recmtl.data.assemble import assemble, split_rows
from recmtl.data.columns import Columns
from recmtl.data.reader import ParquetBatchReader
from recmtl.errors import DataError
from tests.data.helpers import SCHEMA, table, write_store


def _table(id_type=None):
    return pa.table({
        "row_id": pa.array([0, 1, 2, 3], pa.int64()),
        "item": pa.array([5, 6, 7, 8], pa.int64()),
        "recent": pa.array([[1, 2], [], [3], [4, 5, 6]], pa.list_(id_type or pa.int64())),
        "price": pa.array([0.0, 1.0, 2.0, 3.0], pa.float32()),
        "click": pa.array([1, 0, 1, 1], pa.int8()),
        "conversion": pa.array([0, 0, 1, 0], pa.int8()),
    })


def _cols():
    return Columns.decode(_table(), SCHEMA)


def _kjt_lists(batch, key):
    kjt = batch.sparse.to_dict()[key]
    return [v.tolist() for v in kjt.to_dense()]


def test_take_puts_every_column_in_the_order_hand_worked():
    taken = _cols().take(np.array([3, 1, 0, 2]))
    assert taken.offsets["recent"].tolist() == [0, 3, 3, 5, 6]
    assert taken.ids["recent"].tolist() == [4, 5, 6, 1, 2, 3]
    assert taken.ids["item"].tolist() == [8, 6, 5, 7]
    assert taken.dense[:, 0].tolist() == [3.0, 1.0, 0.0, 2.0]
    assert taken.labels["conversion"].tolist() == [0, 0, 0, 1]
    assert taken.group.tolist() == [3, 1, 0, 2]


def test_take_of_a_list_column_matches_python_lists():
    rng = np.random.default_rng(0)
    lists = [rng.integers(0, 10, rng.integers(0, 6)).tolist() for _ in range(500)]
    t = pa.table({
        "row_id": pa.array(np.arange(500)), "item": pa.array(np.arange(500) % 50),
        "recent": pa.array(lists, pa.list_(pa.int64())),
        "price": pa.array(np.zeros(500, np.float32)),
        "click": pa.array(np.zeros(500, np.int8)), "conversion": pa.array(np.zeros(500, np.int8)),
    })
    order = rng.permutation(500)
    taken = Columns.decode(t, SCHEMA).take(order)
    off, vals = taken.offsets["recent"], taken.ids["recent"]
    assert [vals[off[i]:off[i + 1]].tolist() for i in range(500)] == [lists[i] for i in order]


def test_list_offsets_of_a_sliced_table_start_at_zero():
    t = _table(pa.int32()).slice(2, 2)
    cols = Columns.decode(t, SCHEMA)
    assert cols.offsets["recent"].tolist() == [0, 1, 4]
    assert cols.ids["recent"].tolist() == [3, 4, 5, 6] and cols.ids["recent"].dtype == np.int64


def test_assemble_joins_ranges_of_two_row_groups_hand_worked():
    a, b = _cols().take(np.array([3, 1, 0, 2])), _cols()
    batch = assemble([(a, slice(0, 3)), (b, slice(1, 3))], SCHEMA)
    assert _kjt_lists(batch, "recent") == [[4, 5, 6], [], [1, 2], [], [3]]
    assert batch.sparse.to_dict()["item"].values().tolist() == [8, 6, 5, 6, 7]
    assert batch.dense[:, 0].tolist() == [3.0, 1.0, 0.0, 1.0, 2.0]
    assert batch.labels["click"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert batch.labels["click"].dtype == torch.float32
    assert batch.group.tolist() == [3, 1, 0, 1, 2]
    assert batch.size == 5


def test_split_rows():
    assert split_rows(slice(2, 9), 3) == (slice(2, 5), slice(5, 9))
    assert split_rows(slice(2, 4), 5) == (slice(2, 4), slice(4, 4))


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


def test_stopping_early_joins_the_prefetch_and_read_threads(tmp_path):
    import threading

    write_store(tmp_path)
    reader = ParquetBatchReader(str(tmp_path), SCHEMA, 4, prefetch=1)
    batches = reader.epoch(0)
    next(batches)
    batches.close()  # as the training loop does when it reaches max_steps
    # joined by close itself: a thread left inside Arrow at process exit can abort it
    assert not [t.name for t in threading.enumerate() if t.name.startswith("recmtl-")]
