"""Each bad input is an error naming the file, the row group, the column and the expectation."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema, SparseColumn
from recmtl.errors import DataError
from tests.data.helpers import SCHEMA, table


def _read_all(root):
    for _ in ParquetBatchReader(str(root), SCHEMA, 8).epoch(0):
        pass


def _write(root, t, name="part-00000.parquet", row_group_size=4):
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, root / name, row_group_size=row_group_size)
    return root / name


def _poke(column, index, value, n=10, type_=None):
    """A 10-row table whose ``column`` has ``value`` at ``index`` (row group 1 when index >= 4)."""
    t = table(range(n))
    values = t.column(column).to_pylist()
    values[index] = value
    return t.set_column(t.schema.get_field_index(column), column,
                        pa.array(values, type_ or t.schema.field(column).type))


@pytest.mark.parametrize("column, value, problem, expected, shown", [
    ("item", None, "are null", r"ids in \[0, 50\)", ""),
    ("item", -1, "are out of range", r"ids in \[0, 50\)", ": -1"),
    ("item", 50, "are out of range", r"ids in \[0, 50\)", ": 50"),
    ("recent", [3, 10], "hold ids out of range", r"ids in \[0, 10\)", ": 10"),
    ("recent", [-2], "hold ids out of range", r"ids in \[0, 10\)", ": -2"),
    ("price", float("nan"), "are NaN or infinite", "finite floats", ": nan"),
    ("price", float("inf"), "are NaN or infinite", "finite floats", ": inf"),
    ("click", 2, "are not 0 or 1", r"labels in \{0, 1\}", ": 2"),
    ("click", None, "are null", r"labels in \{0, 1\}", ""),
])
def test_bad_values_name_file_row_group_column(tmp_path, column, value, problem, expected, shown):
    path = _write(tmp_path, _poke(column, 5, value))  # row 5 = row group 1, row 1 within it
    with pytest.raises(DataError, match=rf"^{path}, row group 1, column '{column}': 1 value\(s\) "
                                        rf"{problem}; expected {expected} \(first at row 1 of the "
                                        rf"row group{shown}\)$"):
        _read_all(tmp_path)


def test_conversion_without_click(tmp_path):
    t = table(range(10))
    click = np.zeros(10, dtype=np.int8)
    conversion = np.zeros(10, dtype=np.int8)
    conversion[2] = 1
    t = t.set_column(4, "click", pa.array(click)).set_column(5, "conversion", pa.array(conversion))
    path = _write(tmp_path, t)
    with pytest.raises(DataError, match=rf"{path}, row group 0, column 'conversion': 1 value\(s\) "
                                        r"are 1 where 'click' is 0"):
        _read_all(tmp_path)


def test_missing_column(tmp_path):
    path = _write(tmp_path, table(range(10)).drop_columns(["price"]))
    with pytest.raises(DataError, match=rf"{path}: column 'price' is missing; expected floating"):
        _read_all(tmp_path)


@pytest.mark.parametrize("column, arr, expected", [
    ("item", pa.array(np.arange(10, dtype=np.float64)), "integer ids"),
    ("price", pa.array([str(i) for i in range(10)]), "floating-point values"),
    ("recent", pa.array(list(range(10)), pa.int64()), "a list of integer ids"),
    ("click", pa.array([0.0] * 10), r"integer or boolean labels"),
])
def test_wrong_dtype(tmp_path, column, arr, expected):
    t = table(range(10))
    path = _write(tmp_path, t.set_column(t.schema.get_field_index(column), column, arr))
    with pytest.raises(DataError, match=rf"{path}: column '{column}' has type .*; expected {expected}"):
        _read_all(tmp_path)


def test_schema_drift_between_files_names_the_drifted_file(tmp_path):
    _write(tmp_path, table(range(10)), "part-00000.parquet")
    t = table(range(10, 20))
    drifted = _write(tmp_path, t.set_column(t.schema.get_field_index("item"), "item",
                                            pa.array([str(i) for i in range(10)])),
                     "part-00001.parquet")
    with pytest.raises(DataError, match=rf"{drifted}: column 'item' has type string"):
        _read_all(tmp_path)


def test_empty_directory_and_empty_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet files found"):
        _read_all(tmp_path / "empty")
    _write(tmp_path / "zero", table(range(0)))
    with pytest.raises(DataError, match="hold no rows"):
        _read_all(tmp_path / "zero")


def test_empty_file_beside_good_ones_loses_nothing(tmp_path):
    _write(tmp_path, table(range(0)), "part-00000.parquet")
    _write(tmp_path, table(range(10)), "part-00001.parquet")
    reader = ParquetBatchReader(str(tmp_path), SCHEMA, 4)
    assert sum(b.size for b in reader.epoch(0)) == 10


def test_corrupt_file(tmp_path):
    _write(tmp_path, table(range(10)), "part-00000.parquet")
    bad = tmp_path / "part-00001.parquet"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(DataError, match=rf"{bad}: not a readable Parquet file"):
        _read_all(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        _read_all(tmp_path / "nope")


def test_a_side_list_of_another_length_than_its_sequence_names_the_row(tmp_path):
    """``sequence.side`` lists run beside their history; a row where they differ would shift
    every later event's side embedding onto the wrong item, so it is an error, not a pad."""
    schema = FeatureSchema(
        sparse=(*SCHEMA.sparse, SparseColumn("recent_age", 5, True)), dense=SCHEMA.dense,
        labels=SCHEMA.labels, group=SCHEMA.group, label_implies=SCHEMA.label_implies,
        aligned=(("recent_age", "recent"),))
    t = table(range(10))
    ages = [[1] * len(r) for r in t.column("recent").to_pylist()]
    aligned = t.append_column("recent_age", pa.array(ages, pa.list_(pa.int64())))
    _write(tmp_path / "ok", aligned)
    rows = sum(b.size for b in ParquetBatchReader(str(tmp_path / "ok"), schema, 8).epoch(0))
    assert rows == 10
    ages[6] = ages[6] + [2]  # row 6 = row group 1, row 2 within it
    path = _write(tmp_path / "bad", t.append_column("recent_age", pa.array(ages, pa.list_(pa.int64()))))
    with pytest.raises(DataError, match=rf"^{path}, row group 1, column 'recent_age': 1 value\(s\) "
                                        r"differ in length from 'recent'; expected one entry per "
                                        r"event of 'recent' .*\(first at row 2 of the row group\)$"):
        for _ in ParquetBatchReader(str(tmp_path / "bad"), schema, 8).epoch(0):
            pass
