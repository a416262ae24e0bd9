"""Checks on Parquet schemas and row-group contents; every failure names file, row group,
column and what was expected. Nothing is clipped, filled or dropped here."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recmtl.data.schema import FeatureSchema


class DataError(ValueError):
    """Bad input data; the message says where (file, row group, column) and what was expected."""


def check_file_schema(path: str, file_schema: pa.Schema, schema: FeatureSchema) -> None:
    """Every configured column exists with a type the reader can convert without loss."""

    def need(col: str, ok: bool, expected: str) -> None:
        idx = file_schema.get_field_index(col)
        if idx < 0:
            raise DataError(f"{path}: column {col!r} is missing; expected {expected}")
        if not ok:
            raise DataError(
                f"{path}: column {col!r} has type {file_schema.field(idx).type}; expected {expected}"
            )

    def typ(col: str) -> pa.DataType | None:
        idx = file_schema.get_field_index(col)
        return file_schema.field(idx).type if idx >= 0 else None

    for s in schema.sparse:
        t = typ(s.name)
        if s.multi_valued:
            ok = t is not None and pa.types.is_list(t) and pa.types.is_integer(t.value_type)
            need(s.name, ok, "a list of integer ids")
        else:
            need(s.name, t is not None and pa.types.is_integer(t), "integer ids")
    for col in schema.dense + schema.extras:
        t = typ(col)
        need(col, t is not None and pa.types.is_floating(t), "floating-point values")
    for col in schema.labels:
        t = typ(col)
        need(col, t is not None and (pa.types.is_integer(t) or pa.types.is_boolean(t)),
             "integer or boolean labels in {0, 1}")
    if schema.group:
        t = typ(schema.group)
        need(schema.group, t is not None and pa.types.is_integer(t), "integer group ids")


def check_rows(table: pa.Table, schema: FeatureSchema, where: str, first_row: int) -> None:
    """Validates values of one row-group slice. ``first_row``: its offset in the row group."""

    def fail(col: str, bad: np.ndarray, values: np.ndarray | None, problem: str,
             expected: str) -> None:
        idx = np.flatnonzero(bad)
        first = int(idx[0])
        shown = "" if values is None else f": {np.asarray(values[first]).item()!r}"
        raise DataError(
            f"{where}, column {col!r}: {len(idx)} value(s) {problem}; expected {expected} "
            f"(first at row {first_row + first} of the row group{shown})"
        )

    def nulls(col: str, arr: pa.ChunkedArray | pa.Array, expected: str) -> None:
        if arr.null_count:
            fail(col, np.asarray(arr.is_null()), None, "are null", expected)

    for s in schema.sparse:
        arr = table.column(s.name)
        expected = f"ids in [0, {s.num_embeddings})"
        nulls(s.name, arr, expected)
        if s.multi_valued:
            lists = arr.combine_chunks()
            ids = lists.flatten()
            nulls(s.name, ids, expected)
            ids_np = ids.to_numpy()
            owner = np.repeat(np.arange(len(lists)), pc.list_value_length(lists).to_numpy())
            bad_ids = (ids_np < 0) | (ids_np >= s.num_embeddings)
            if bad_ids.any():
                bad_rows = np.zeros(len(lists), dtype=bool)
                bad_rows[owner[bad_ids]] = True
                first_bad = ids_np[bad_ids][0]
                fail(s.name, bad_rows, np.full(len(lists), first_bad), "hold ids out of range",
                     expected)
        else:
            ids_np = arr.to_numpy()
            bad = (ids_np < 0) | (ids_np >= s.num_embeddings)
            if bad.any():
                fail(s.name, bad, ids_np, "are out of range", expected)
    for col in schema.dense + schema.extras:
        arr = table.column(col)
        nulls(col, arr, "finite floats")
        x = arr.to_numpy()
        bad = ~np.isfinite(x)
        if bad.any():
            fail(col, bad, x, "are NaN or infinite", "finite floats")
    labels = {}
    for col in schema.labels:
        arr = table.column(col)
        nulls(col, arr, "labels in {0, 1}")
        y = arr.to_numpy().astype(np.int64)
        bad = (y != 0) & (y != 1)
        if bad.any():
            fail(col, bad, y, "are not 0 or 1", "labels in {0, 1}")
        labels[col] = y
    for child, parent in schema.label_implies:
        bad = (labels[child] == 1) & (labels[parent] == 0)
        if bad.any():
            fail(child, bad, None, f"are 1 where {parent!r} is 0", f"{child}=1 only when {parent}=1")
    if schema.group:
        nulls(schema.group, table.column(schema.group), "non-null group ids")
