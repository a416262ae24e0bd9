"""`recmtl prepare` reads a column whose type differs between files only in width or unit as
one type (the wider, the finer unit) and counts the cast; real drift stays an error.

The reference is the same export written with one type per column (cast by pyarrow), whose
prepared output must be identical."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.feature_store.prepare import prepare
from pipelines.feature_store.sources import unify
from tests.raw_export import N, raw_columns, write_spec

NARROW = {  # day-b's types: each one narrower or coarser than day-a's
    "item": pa.int32(),
    "user": pa.large_string(),
    "clicked_item_ids": pa.large_list(pa.int32()),
    "price": pa.float32(),
    "ts": pa.timestamp("ms"),
    "click": pa.int64(),  # wider: the unified type of click is int64 for both files
}


def _export(root, first, second):
    root.mkdir()
    pq.write_table(first, root / "day-a.parquet", row_group_size=64)
    pq.write_table(second, root / "day-b.parquet", row_group_size=64)
    return root


def _cast(table, types, nullable=True):
    fields = [pa.field(f.name, types.get(f.name, f.type), nullable=nullable) for f in table.schema]
    return table.cast(pa.schema(fields))


@pytest.fixture(scope="module")
def mixed_and_uniform(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("types")
    cols = raw_columns()
    cols["ts"] = [t.replace(microsecond=0) for t in cols["ts"]]  # exact in ms
    table = pa.table(cols)
    a, b = table.slice(0, N // 2), _cast(table.slice(N // 2), NARROW)
    wide = {"item": pa.int64(), "user": pa.large_string(),
            "clicked_item_ids": pa.large_list(pa.int64()), "price": pa.float64(),
            "ts": pa.timestamp("us"), "click": pa.int64()}
    out = {}
    for name, (first, second) in {
        "mixed": (a, b),
        "uniform": (_cast(a, wide), _cast(b, wide)),  # pyarrow's cast: the reference
    }.items():
        (tmp / name).mkdir()
        spec = write_spec(tmp / name, _export(tmp / name / "export", first, second))
        out[name] = (prepare(spec), tmp / name / "out")
    return out


def test_widths_and_units_unify_and_every_value_is_kept(mixed_and_uniform):
    (_, mixed), (_, uniform) = mixed_and_uniform["mixed"], mixed_and_uniform["uniform"]
    for split in ("train", "valid", "test"):
        got, want = pq.read_table(mixed / split), pq.read_table(uniform / split)
        assert got.num_rows == want.num_rows > 0
        assert got.to_pydict() == want.to_pydict()
    got, want = (json.loads((d / "transforms.json").read_text()) for d in (mixed, uniform))
    # the float64 statistics may differ in the last bit (polars sums in another order), and
    # so may the content hash over them
    for stat in ("mean", "std"):
        assert got["dense"][0].pop(stat) == pytest.approx(want["dense"][0].pop(stat), rel=1e-12)
    for key in ("version", "parent_version"):
        got.pop(key, None), want.pop(key, None)
    assert got == want


def test_casts_are_counted_in_stats_and_logged(mixed_and_uniform, tmp_path):
    import mlflow

    from recmtl.train.tracking import log_data_stats

    stats, out = mixed_and_uniform["mixed"]
    expected = {
        "item": ("int64", "int32"),
        "user": ("large_string", "string"),  # day-a is the narrower one here
        "clicked_item_ids": ("large_list<element: int64>", "large_list<element: int32>"),
        "price": ("double", "float"),
        "ts": ("timestamp[us]", "timestamp[ms]"),
        "click": ("int64", "int8"),
    }
    casts = stats["type_casts"]
    assert set(casts) == set(expected)
    for col, (to, was) in expected.items():
        assert casts[col]["type"] == to
        if col == "clicked_item_ids":  # day-a's list<int64> is cast to large_list too
            assert casts[col]["files"] == 2 and casts[col]["rows"] == N
            assert casts[col]["from"] == {"list<element: int64>": 1, was: 1}
        else:
            assert casts[col]["files"] == 1 and casts[col]["rows"] == N // 2
            assert casts[col]["from"] == {was: 1}
    assert json.loads((out / "stats.json").read_text())["type_casts"] == casts
    assert mixed_and_uniform["uniform"][0]["type_casts"] == {}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            log_data_stats(str(out))
        metrics = mlflow.tracking.MlflowClient().get_run(run.info.run_id).data.metrics
    finally:
        mlflow.set_tracking_uri(None)
    assert {k: v for k, v in metrics.items() if k.startswith("data/type_casts/")} == {
        f"data/type_casts/{col}": casts[col]["rows"] for col in expected}


def test_the_cast_is_printed(tmp_path, capsys):
    table = pa.table(raw_columns())
    src = _export(tmp_path / "export", table.slice(0, N // 2),
                  _cast(table.slice(N // 2), {"item": pa.int32()}))
    prepare(write_spec(tmp_path, src))
    assert (f"column 'item': read as int64; 1 of 2 file(s) ({N // 2} rows) cast from int32"
            in capsys.readouterr().out)


def test_nullable_or_not_is_no_cast(tmp_path):
    table = pa.table(raw_columns())
    required = ["item", "age", "click"]
    b = table.slice(N // 2)
    b = b.cast(pa.schema([pa.field(f.name, f.type, nullable=f.name not in required)
                          for f in b.schema]))
    assert not b.schema.field("item").nullable
    stats = prepare(write_spec(tmp_path, _export(tmp_path / "export", table.slice(0, N // 2), b)))
    assert stats["type_casts"] == {} and stats["rows_in"] == N


@pytest.mark.parametrize("a, b, expected", [
    (pa.int32(), pa.int64(), pa.int64()),
    (pa.int8(), pa.uint8(), pa.int16()),
    (pa.int64(), pa.uint32(), pa.int64()),
    (pa.uint16(), pa.uint32(), pa.uint32()),
    (pa.float16(), pa.float64(), pa.float64()),
    (pa.timestamp("ns"), pa.timestamp("s"), pa.timestamp("ns")),
    (pa.timestamp("ms", "UTC"), pa.timestamp("us", "UTC"), pa.timestamp("us", "UTC")),
    (pa.string(), pa.large_string(), pa.large_string()),
    (pa.list_(pa.int32()), pa.large_list(pa.int64()), pa.large_list(pa.int64())),
    # real drift: no lossless common type of the same kind
    (pa.int64(), pa.string(), None),
    (pa.int64(), pa.float64(), None),
    (pa.int64(), pa.uint64(), None),
    (pa.list_(pa.int64()), pa.int64(), None),
    (pa.list_(pa.int64()), pa.list_(pa.string()), None),
    (pa.timestamp("ms", "UTC"), pa.timestamp("ms"), None),
    (pa.date32(), pa.timestamp("ms"), None),
])
def test_unify(a, b, expected):
    assert unify(a, b) == expected and unify(b, a) == expected


def test_int_bounds_survive_the_widening():
    for narrow, wide in ((pa.int32(), pa.int64()), (pa.uint32(), pa.int64()),
                         (pa.uint8(), pa.int16())):
        info = np.iinfo(narrow.to_pandas_dtype())
        values = pa.array([info.min, info.max], narrow)
        assert unify(narrow, wide) == wide
        assert values.cast(wide).to_pylist() == [int(info.min), int(info.max)]
