"""Reading a raw export for `recmtl prepare`: its files, one type per column, the types each
role needs.

Files of one export often differ in width or unit only (one day written as int32, the next as
int64; timestamps in ms and ns; float and double; string and large_string; a column nullable
in one file and not in another). Those columns are read as one type, the widest or finest,
and every cast is counted (``stats.json`` ``type_casts``: per column, the type read, the
files and rows cast and the types they had). A real difference (int vs string, a list in one
file and a scalar in another, two time zones) is schema drift: an error naming both files,
the column and both types. Then each column must have a type its role can use (``identity``
needs integer ids, labels are numbers, a multi-valued feature is a list, ...); the error says
which column of which file has which type and what would work.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.feature_store import partitions
from pipelines.feature_store.spec import PrepareSpec
from recmtl.config import ConfigError
from recmtl.data.files import list_parquet_files
from recmtl.errors import DataError

_UNITS = ("s", "ms", "us", "ns")


@dataclass(frozen=True)
class ExportSchema:
    """The needed columns of an export, each with the one type it is read as."""

    types: dict[str, pa.DataType]  # column -> the unified Arrow type
    seen_in: dict[str, str]  # column -> the first file holding it (named in type errors)
    casts: dict[str, dict[str, Any]]  # column -> {type, files, rows, from: {type: files}}
    rows: int

    @property
    def polars(self) -> dict[str, pl.DataType]:
        frame = pl.from_arrow(pa.schema(list(self.types.items())).empty_table())
        assert isinstance(frame, pl.DataFrame)
        return dict(frame.schema)


def source_files(uri: str, days: tuple[str, ...] = ()
                 ) -> tuple[list[str], list[str], pafs.FileSystem]:
    """The Parquet files of the export, the paths polars reads, and their filesystem.

    Hive partitions (``<key>=<date>/``, ``pipelines/feature_store/partitions.py``) are read
    day after day, by date, each day's part files in name order; a missing or empty day is
    an error. ``days`` picks some days of a partitioned export (Hive or ``day-NNNN.parquet``).
    Anything else: every Parquet file at or under ``uri``, sorted."""
    found = partitions.find_days(uri)
    if days:
        if found is None:
            raise ConfigError(f"{uri}: days {list(days)} pick days of a partitioned export "
                              "(<key>=<date>/ directories or day-NNNN.parquet files); this is "
                              "neither")
        found = partitions.select(found, days, uri)
        partitions.check_days(found, uri, contiguous=False)
    elif found is not None and found[0].key:
        partitions.check_days(found, uri)
    else:
        found = None
    if found is not None:
        return ([p for d in found for p in d.paths], [f for d in found for f in d.files],
                found[0].fs)
    fs, files = list_parquet_files(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return files, files, fs
    _, root = pafs.FileSystem.from_uri(uri)
    return files, [uri.rstrip("/") + "/" + f[len(root):].lstrip("/") for f in files], fs


def needed_columns(spec: PrepareSpec) -> list[str]:
    cols = ([f.source for f in spec.sparse] + [d.source for d in spec.dense] + list(spec.labels)
            + [c for c in (spec.group, spec.weight, spec.split.column) if c] + list(spec.keep))
    return list(dict.fromkeys(cols))


def unify(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The one type both ``a`` and ``b`` convert to without loss (the wider, the finer unit),
    or None when they differ in kind (schema drift).

    >>> unify(pa.int32(), pa.int64()), unify(pa.timestamp("ms"), pa.timestamp("ns"))
    (DataType(int64), TimestampType(timestamp[ns]))
    >>> unify(pa.int64(), pa.string()) is None
    True
    """
    if a == b:
        return a
    t = pa.types
    if t.is_integer(a) and t.is_integer(b):
        if t.is_signed_integer(a) == t.is_signed_integer(b):
            return a if a.bit_width >= b.bit_width else b
        signed, unsigned = (a, b) if t.is_signed_integer(a) else (b, a)
        if unsigned.bit_width == 64:  # no signed type holds every uint64
            return None
        return _INTS[max(signed.bit_width, 2 * unsigned.bit_width)]
    if t.is_floating(a) and t.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    if t.is_timestamp(a) and t.is_timestamp(b):
        if a.tz != b.tz:
            return None
        return a if _UNITS.index(a.unit) >= _UNITS.index(b.unit) else b
    if t.is_duration(a) and t.is_duration(b):
        return a if _UNITS.index(a.unit) >= _UNITS.index(b.unit) else b
    if {a, b} <= {pa.string(), pa.large_string()}:
        return pa.large_string()
    if {a, b} <= {pa.binary(), pa.large_binary()}:
        return pa.large_binary()
    lists = (t.is_list(a) or t.is_large_list(a)) and (t.is_list(b) or t.is_large_list(b))
    if lists:
        value = unify(a.value_type, b.value_type)
        if value is None:
            return None
        field = a.value_field.with_type(value).with_nullable(True)  # keeps a's element name
        return (pa.large_list if t.is_large_list(a) or t.is_large_list(b) else pa.list_)(field)
    return None


_INTS = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}


def read_schemas(files: list[str], columns: list[str], fs: pafs.FileSystem) -> ExportSchema:
    """Every column of ``columns`` exists in every file; their types unify across files."""
    found: dict[str, list[tuple[str, pa.DataType, int]]] = {c: [] for c in columns}
    rows = 0
    for path in files:
        try:
            with fs.open_input_file(path) as f:
                meta = pq.read_metadata(f)
            schema = meta.schema.to_arrow_schema()
        except Exception as e:  # noqa: BLE001 - a corrupt file, whatever pyarrow raised
            raise DataError(f"{path}: not a readable Parquet file ({_first_line(e)})") from e
        rows += meta.num_rows
        for col in columns:
            idx = schema.get_field_index(col)
            if idx < 0:
                raise DataError(f"{path}: column {col!r} is missing (the feature schema needs it)")
            found[col].append((path, schema.field(idx).type, meta.num_rows))
    types, casts = {}, {}
    for col, seen in found.items():
        first_path, typ, _ = seen[0]
        for path, other, _ in seen[1:]:
            wide = unify(typ, other)
            if wide is None:
                raise DataError(
                    f"{path}: column {col!r} has type {other}, but {first_path} has "
                    f"{seen[0][1]}; expected one kind of type in every file, differing at "
                    "most in width or unit (schema drift)")
            typ = wide
        types[col] = typ
        cast = [(t, n) for _, t, n in seen if t != typ]
        if cast:
            sources: dict[str, int] = {}
            for t, _ in cast:
                sources[str(t)] = sources.get(str(t), 0) + 1
            casts[col] = {"type": str(typ), "files": len(cast), "rows": sum(n for _, n in cast),
                          "from": sources}
    return ExportSchema(types, {c: s[0][0] for c, s in found.items()}, casts, rows)


def scan(readable: list[str], schema: ExportSchema, file_column: str) -> pl.LazyFrame:
    """The needed columns of every file, each cast to its one type, with the file's path."""
    dtypes = schema.polars
    frames = [pl.scan_parquet(path, include_file_paths=file_column)
              .select([pl.col(c).cast(dtypes[c]) for c in schema.types] + [pl.col(file_column)])
              for path in readable]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")


def check_types(spec: PrepareSpec, schema: ExportSchema, spec_path: str = "the feature schema"
                ) -> None:
    """Each column has a type its role can use; the error names file, column, type and a fix."""
    t = pa.types

    def fail(col: str, expected: str) -> None:
        raise DataError(f"{schema.seen_in[col]}: column {col!r} has type {schema.types[col]}; "
                        f"{expected}")

    def scalar_id(typ: pa.DataType) -> bool:
        return (t.is_integer(typ) or t.is_string(typ) or t.is_large_string(typ)
                or t.is_boolean(typ) or t.is_dictionary(typ) or t.is_date(typ))

    def is_list(typ: pa.DataType) -> bool:
        return t.is_list(typ) or t.is_large_list(typ)

    for f in spec.sparse:
        typ = schema.types[f.source]
        where = f"sparse feature {f.name!r}"
        if f.multi_valued and not is_list(typ):
            fail(f.source, f"{where} is multi_valued, which needs a list column")
        if not f.multi_valued and is_list(typ):
            fail(f.source, f"{where} reads a list column; set multi_valued: true")
        value = typ.value_type if f.multi_valued else typ
        if f.transform == "identity" and not t.is_integer(value):
            fail(f.source, f"{where} uses transform identity, which needs integer ids in "
                           f"[0, {f.buckets}); use transform: vocab or hash for other ids")
        if not scalar_id(value):
            fail(f.source, f"{where} needs integer or string ids")
    for d in spec.dense:
        if not _numeric(schema.types[d.source]):
            fail(d.source, f"dense feature {d.name!r} needs numbers (integer or floating point)")
    for label in spec.labels:
        typ = schema.types[label]
        if not (_numeric(typ) or t.is_boolean(typ)):
            fail(label, "labels must be integers, booleans or floats with values 0 or 1")
    if spec.weight and not _numeric(schema.types[spec.weight]):
        fail(spec.weight, "sample weights must be numbers")
    if spec.group and not scalar_id(schema.types[spec.group]):
        fail(spec.group, "group ids must be integers or strings")
    s = spec.split
    if s.column and s.kind == "hash" and not scalar_id(schema.types[s.column]):
        fail(s.column, "a hash split needs integer or string keys")
    if s.column and s.kind == "time":
        _check_time_split(spec, schema, spec_path)


def _check_time_split(spec: PrepareSpec, schema: ExportSchema, spec_path: str) -> None:
    s = spec.split
    col = s.column
    assert col is not None
    typ = schema.types[col]
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        parse, kind = dt.datetime.fromisoformat, "ISO dates or times (2026-10-25)"
    elif _numeric(typ):
        parse, kind = float, "numbers"  # type: ignore[assignment]
    else:
        raise DataError(f"{schema.seen_in[col]}: column {col!r} has type {typ}; a time split "
                        "needs a timestamp, date or numeric column")
    for key in ("valid_from", "test_from"):
        try:
            parse(str(getattr(s, key)))
        except ValueError:
            raise ConfigError(f"{spec_path}: split.{key}: {getattr(s, key)!r} is not one of "
                              f"the {kind} that column {col!r} ({typ}) compares with") from None


def _numeric(typ: pa.DataType) -> bool:
    return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
