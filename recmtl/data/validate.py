"""Checks on Parquet schemas and row-group contents; every failure names file, row group,
column and what was expected. Nothing is clipped, filled or dropped here."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recmtl.data.columns import Columns
from recmtl.data.schema import FeatureSchema
from recmtl.errors import DataError


def check_file_schema(path: str, file_schema: pa.Schema, schema: FeatureSchema,
                      seen: dict[str, tuple[str, pa.DataType]] | None = None) -> None:
    """Every configured column exists with a type the reader can convert to its own dtype
    (int64 ids, float32 dense values and labels). Files may differ in width (int32 and int64
    ids, float and double values, list and large_list, nullable or not): each is converted as
    it is read. ``seen`` (column -> the first file and its type, filled here) lets the error
    for a file that drifted name the file it drifted from."""

    def need(col: str, ok: bool, expected: str) -> None:
        idx = file_schema.get_field_index(col)
        if idx < 0:
            raise DataError(f"{path}: column {col!r} is missing; expected {expected}")
        if not ok:
            drift = ""
            if seen and col in seen:
                drift = f" (schema drift: {seen[col][0]} has {seen[col][1]})"
            raise DataError(f"{path}: column {col!r} has type {file_schema.field(idx).type}; "
                            f"expected {expected}{drift}")
        if seen is not None:
            seen.setdefault(col, (path, file_schema.field(idx).type))

    def typ(col: str) -> pa.DataType | None:
        idx = file_schema.get_field_index(col)
        return file_schema.field(idx).type if idx >= 0 else None

    for s in schema.sparse:
        t = typ(s.name)
        if s.multi_valued:
            ok = (t is not None and (pa.types.is_list(t) or pa.types.is_large_list(t))
                  and pa.types.is_integer(t.value_type))
            need(s.name, ok, "a list of integer ids")
        else:
            need(s.name, t is not None and pa.types.is_integer(t), "integer ids")
    for col in schema.dense + schema.extras:
        t = typ(col)
        need(col, t is not None and pa.types.is_floating(t), "floating-point values")
    for col in schema.targets:
        t = typ(col)
        need(col, t is not None and (pa.types.is_floating(t) or pa.types.is_integer(t)),
             "numeric regression targets")
    for col in schema.labels:
        t = typ(col)
        need(col, t is not None and (pa.types.is_integer(t) or pa.types.is_boolean(t)),
             "integer or boolean labels in {0, 1}")
    if schema.group:
        t = typ(schema.group)
        need(schema.group, t is not None and pa.types.is_integer(t), "integer group ids")


def _fail(where: str, col: str, bad: np.ndarray, value: object, problem: str, expected: str,
          first_row: int) -> None:
    idx = np.flatnonzero(bad)
    shown = "" if value is None else f": {np.asarray(value).item()!r}"
    raise DataError(
        f"{where}, column {col!r}: {len(idx)} value(s) {problem}; expected {expected} "
        f"(first at row {first_row + int(idx[0])} of the row group{shown})"
    )


def check_nulls(table: pa.Table, schema: FeatureSchema, where: str, first_row: int) -> None:
    """No configured column may hold nulls, but for null lists (read as empty, like a user
    without history), nor null ids inside lists."""
    expectations = {s.name: f"ids in [0, {s.num_embeddings})" for s in schema.sparse}
    expectations |= dict.fromkeys(schema.dense + schema.extras, "finite floats")
    expectations |= dict.fromkeys(schema.labels, "labels in {0, 1}")
    expectations |= dict.fromkeys(schema.targets, "finite regression targets")
    if schema.group:
        expectations[schema.group] = "non-null group ids"
    lists = {s.name for s in schema.sparse if s.multi_valued}
    for col, expected in expectations.items():
        arr = table.column(col)
        if arr.null_count and col not in lists:
            _fail(where, col, np.asarray(arr.is_null()), None, "are null", expected, first_row)
        if col in lists:
            chunks = arr.combine_chunks()
            inner = chunks.flatten()
            if inner.null_count:
                owner = np.repeat(np.arange(len(chunks)),
                                  pc.list_value_length(chunks).to_numpy(zero_copy_only=False))
                bad = np.zeros(len(chunks), dtype=bool)
                bad[owner[np.asarray(inner.is_null())]] = True
                _fail(where, col, bad, None, "are null", expected, first_row)


def check_values(cols: Columns, schema: FeatureSchema, where: str, first_row: int) -> None:
    """Ranges, finiteness and label rules on decoded rows; reductions first, masks only on
    failure, so a clean row group costs a few passes over its memory."""
    for s in schema.sparse:
        ids = cols.ids[s.name]
        # One pass for both bounds: as unsigned, a negative id is larger than any table.
        if len(ids) == 0 or ids.view(np.uint64).max() < s.num_embeddings:
            continue
        bad_ids = (ids < 0) | (ids >= s.num_embeddings)
        expected = f"ids in [0, {s.num_embeddings})"
        if s.multi_valued:
            off = cols.offsets[s.name]
            rows = np.searchsorted(off, np.flatnonzero(bad_ids), side="right") - 1
            bad = np.zeros(cols.n, dtype=bool)
            bad[rows] = True
            _fail(where, s.name, bad, ids[bad_ids][0], "hold ids out of range", expected,
                  first_row)
        _fail(where, s.name, bad_ids, ids[bad_ids][0], "are out of range", expected, first_row)
    for side, sequence in schema.aligned:
        bad = np.diff(cols.offsets[side]) != np.diff(cols.offsets[sequence])
        if bad.any():
            _fail(where, side, bad, None, f"differ in length from {sequence!r}",
                  f"one entry per event of {sequence!r} (a side list of that sequence)",
                  first_row)
    if not np.isfinite(cols.dense).all():
        j = int(np.flatnonzero(~np.isfinite(cols.dense).all(axis=0))[0])
        x = cols.dense[:, j]
        bad = ~np.isfinite(x)
        _fail(where, schema.dense[j], bad, x[bad][0], "are NaN or infinite", "finite floats",
              first_row)
    for col, x in cols.extras.items():
        if not np.isfinite(x).all():
            bad = ~np.isfinite(x)
            _fail(where, col, bad, x[bad][0], "are NaN or infinite", "finite floats", first_row)
    for col in schema.targets:
        y = cols.labels[col]
        if not np.isfinite(y).all():
            bad = ~np.isfinite(y)
            _fail(where, col, bad, y[bad][0], "are NaN or infinite", "finite regression targets",
                  first_row)
    for col in schema.labels:
        y = cols.labels[col]
        if len(y) and (y.min() < 0 or y.max() > 1):
            bad = (y != 0) & (y != 1)
            _fail(where, col, bad, y[bad][0], "are not 0 or 1", "labels in {0, 1}", first_row)
    for child, parent in schema.label_implies:
        c, p = cols.labels[child], cols.labels[parent]
        if np.any(c > p):
            _fail(where, child, c > p, None, f"are 1 where {parent!r} is 0",
                  f"{child}=1 only when {parent}=1", first_row)
