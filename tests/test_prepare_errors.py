"""`recmtl prepare` on bad input, through the real command: exit code 2 and one line
``recmtl: error: <file>: column <name> ...`` on stderr, no traceback."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.raw_export import SPEC, N, raw_columns

RECMTL = str(Path(sys.executable).with_name("recmtl"))


def _run(tmp_path, table, second=None, **spec_changes):
    """Writes ``table`` as day-a (first half) and day-b (second half, through ``second``),
    runs `recmtl prepare` on it; returns (exit code, stderr lines, export directory)."""
    src = tmp_path / "export"
    src.mkdir()
    pq.write_table(table.slice(0, N // 2), src / "day-a.parquet")
    pq.write_table((second or (lambda t: t))(table.slice(N // 2)), src / "day-b.parquet")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "source": str(src), "output": str(tmp_path / "out"),
                                    **spec_changes}))
    r = subprocess.run([RECMTL, "prepare", str(spec)], capture_output=True, text=True,
                       timeout=300)
    return r.returncode, r.stderr.splitlines(), src


def _replace(table, column, values):
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values))


def _one_error_line(code, lines):
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("recmtl: error: "), lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("change, spec, expected", [
    (None, {"sparse": [{"name": "user_id", "column": "user", "transform": "identity",
                        "buckets": 64}]},
     "day-a.parquet: column 'user' has type string; sparse feature 'user_id' uses transform "
     "identity, which needs integer ids in [0, 64); use transform: vocab or hash for other ids"),
    (("click", ["yes"] * N), {},
     "day-a.parquet: column 'click' has type string; labels must be integers, booleans or "
     "floats with values 0 or 1"),
    (("price", ["1.5"] * N), {},
     "day-a.parquet: column 'price' has type string; dense feature 'price' needs numbers "
     "(integer or floating point)"),
    (("clicked_item_ids", list(range(N))), {},
     "day-a.parquet: column 'clicked_item_ids' has type int64; sparse feature 'clicked_items' "
     "is multi_valued, which needs a list column"),
    (("ts", ["2026-11-01"] * N), {},
     "day-a.parquet: column 'ts' has type string; a time split needs a timestamp, date or "
     "numeric column"),
    (None, {"group": "clicked_item_ids"},
     "day-a.parquet: column 'clicked_item_ids' has type list<element: int64>; group ids must "
     "be integers or strings"),
])
def test_a_column_of_the_wrong_type(tmp_path, change, spec, expected):
    table = pa.table(raw_columns())
    if change:
        table = _replace(table, *change)
    code, lines, src = _run(tmp_path, table, **spec)
    assert _one_error_line(code, lines) == f"recmtl: error: {src}/{expected}"


def test_labels_other_than_0_or_1(tmp_path):
    cols = raw_columns()
    cols["click"] = list(cols["click"])
    cols["click"][N // 2 + 7] = 3
    code, lines, src = _run(tmp_path, pa.table(cols))
    assert _one_error_line(code, lines) == (
        f"recmtl: error: {src}/day-b.parquet: column 'click': 1 row(s) violate the schema; "
        f"expected labels 0 or 1, not null (first at row {N // 2 + 7} of the export)")


def test_missing_column(tmp_path):
    code, lines, src = _run(tmp_path, pa.table(raw_columns()),
                            second=lambda t: t.drop_columns(["price"]))
    assert _one_error_line(code, lines) == (
        f"recmtl: error: {src}/day-b.parquet: column 'price' is missing (the feature schema "
        "needs it)")


def test_list_in_one_file_scalar_in_the_other_is_drift(tmp_path):
    code, lines, src = _run(tmp_path, pa.table(raw_columns()), second=lambda t: _replace(
        t, "clicked_item_ids", list(range(t.num_rows))))
    assert _one_error_line(code, lines) == (
        f"recmtl: error: {src}/day-b.parquet: column 'clicked_item_ids' has type int64, but "
        f"{src}/day-a.parquet has list<element: int64>; expected one kind of type in every "
        "file, differing at most in width or unit (schema drift)")


def test_int_in_one_file_string_in_the_other_is_drift(tmp_path):
    code, lines, src = _run(tmp_path, pa.table(raw_columns()), second=lambda t: _replace(
        t, "item", [str(v) for v in t.column("item").to_pylist()]))
    line = _one_error_line(code, lines)
    assert line.startswith(f"recmtl: error: {src}/day-b.parquet: column 'item' has type "
                           f"string, but {src}/day-a.parquet has int64;")


def test_unreadable_file(tmp_path):
    code, lines, src = _run(tmp_path, pa.table(raw_columns()))
    (src / "day-b.parquet").write_bytes((src / "day-b.parquet").read_bytes()[:100])  # truncated
    spec = tmp_path / "spec.yaml"
    r = subprocess.run([RECMTL, "prepare", str(spec)], capture_output=True, text=True,
                       timeout=300)
    line = _one_error_line(r.returncode, r.stderr.splitlines())
    assert line.startswith(f"recmtl: error: {src}/day-b.parquet: not a readable Parquet file (")


def test_an_export_without_rows(tmp_path):
    code, lines, src = _run(tmp_path, pa.table(raw_columns()).slice(0, 0))
    assert _one_error_line(code, lines) == (
        f"recmtl: error: {src}: the export's 2 Parquet file(s) hold no rows")


def test_a_directory_without_parquet_files(tmp_path):
    spec = tmp_path / "spec.yaml"
    (tmp_path / "empty").mkdir()
    spec.write_text(yaml.safe_dump({**SPEC, "source": str(tmp_path / "empty"),
                                    "output": str(tmp_path / "out")}))
    r = subprocess.run([RECMTL, "prepare", str(spec)], capture_output=True, text=True,
                       timeout=300)
    assert _one_error_line(r.returncode, r.stderr.splitlines()) == (
        f"recmtl: error: {tmp_path / 'empty'}: no .parquet files found")


def test_an_empty_train_split(tmp_path):
    split = {**SPEC["split"], "valid_from": "2020-01-01", "test_from": "2020-01-02"}
    code, lines, src = _run(tmp_path, pa.table(raw_columns()), split=split)
    assert _one_error_line(code, lines) == (
        f"recmtl: error: {src}: the train split is empty (every ts is on or after valid_from "
        "'2020-01-01'); vocabularies and statistics are fit on train rows")


def test_a_boundary_that_is_not_a_date(tmp_path):
    split = {**SPEC["split"], "valid_from": "next tuesday"}
    code, lines, src = _run(tmp_path, pa.table(raw_columns()), split=split)
    line = _one_error_line(code, lines)
    assert line.startswith("recmtl: error: ") and "split.valid_from: 'next tuesday'" in line
    assert "'ts' (timestamp[us])" in line
