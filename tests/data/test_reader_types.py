"""Training files of one split may differ in width (int32 and int64 ids, float and double,
list and large_list, bool and int8 labels, nullable or not): the reader converts each to its
own dtypes, exactly. A column of another kind is drift, named with both files and types."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recmtl.data.reader import ParquetBatchReader
from recmtl.errors import DataError
from tests.data.helpers import SCHEMA, table

NARROW = pa.schema([
    pa.field("row_id", pa.int32()),
    pa.field("item", pa.uint16(), nullable=False),
    pa.field("recent", pa.large_list(pa.int32())),
    pa.field("price", pa.float64()),
    pa.field("click", pa.bool_()),
    pa.field("conversion", pa.int64(), nullable=False),
])


def _read(root):
    batches = list(ParquetBatchReader(str(root), SCHEMA, 9).epoch(0))
    kjt = [b.sparse.to_dict() for b in batches]
    return {
        "row_id": np.concatenate([b.group.numpy() for b in batches]),
        "item": np.concatenate([k["item"].values().numpy() for k in kjt]),
        "recent": [lst for k in kjt for lst in k["recent"].to_dense()],
        "price": np.concatenate([b.dense[:, 0].numpy() for b in batches]),
        "click": np.concatenate([b.labels["click"].numpy() for b in batches]),
        "conversion": np.concatenate([b.labels["conversion"].numpy() for b in batches]),
    }


def test_files_of_different_widths_read_exactly(tmp_path):
    a, b = table(range(0, 20), seed=1), table(range(20, 45), seed=2)
    b = b.set_column(3, "price", pa.array(np.random.default_rng(3).normal(size=25)))  # float64
    pq.write_table(a, tmp_path / "part-0.parquet", row_group_size=7)
    pq.write_table(b.cast(NARROW), tmp_path / "part-1.parquet", row_group_size=7)
    got = _read(tmp_path)
    # the reference: the two tables as Python values, converted by numpy
    want = {c: a.column(c).to_pylist() + b.column(c).to_pylist() for c in a.column_names}
    assert got["row_id"].dtype == np.int64 and got["row_id"].tolist() == list(range(45))
    assert got["item"].tolist() == want["item"]
    assert [v.tolist() for v in got["recent"]] == want["recent"]
    assert got["price"].dtype == np.float32
    np.testing.assert_array_equal(got["price"], np.array(want["price"], dtype=np.float32))
    assert got["price"][20:].tolist() != b.column("price").to_pylist()  # float64 was narrowed
    assert got["click"].tolist() == [float(v) for v in want["click"]]
    assert got["conversion"].tolist() == [float(v) for v in want["conversion"]]


def test_ids_beyond_int32_stay_exact(tmp_path):
    from recmtl.data.schema import FeatureSchema, SparseColumn

    big = 2**40
    schema = FeatureSchema(sparse=(SparseColumn("item", big + 10, False),), dense=(),
                           labels=("click",))
    pq.write_table(pa.table({"item": pa.array([1, 2], pa.int32()), "click": [0, 1]}),
                   tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"item": pa.array([big + 1, big + 9], pa.uint64()),
                             "click": pa.array([True, False])}), tmp_path / "part-1.parquet")
    batch = next(ParquetBatchReader(str(tmp_path), schema, 4).epoch(0))
    assert batch.sparse.values().tolist() == [1, 2, big + 1, big + 9]


@pytest.mark.parametrize("column, arr, was", [
    ("item", pa.array([str(i) for i in range(10)]), "int64"),
    ("recent", pa.array(list(range(10)), pa.int64()), "list<element: int64>"),
    ("price", pa.array(list(range(10)), pa.int64()), "float"),
])
def test_drift_names_both_files_and_both_types(tmp_path, column, arr, was):
    first = tmp_path / "part-0.parquet"
    pq.write_table(table(range(10)), first)
    t = table(range(10, 20))
    drifted = tmp_path / "part-1.parquet"
    pq.write_table(t.set_column(t.schema.get_field_index(column), column, arr), drifted)
    with pytest.raises(DataError, match=rf"^{drifted}: column '{column}' has type {arr.type}; "
                                        rf"expected .* \(schema drift: {first} has {was}\)$"):
        list(ParquetBatchReader(str(tmp_path), SCHEMA, 8).epoch(0))
