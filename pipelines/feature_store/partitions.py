"""The days of a raw export: Hive partitions or one ``day-NNNN.parquet`` file a day.

Warehouses write a day-partitioned table as one directory per day under a root (a local
directory or an ``s3://`` prefix), named ``<key>=<value>``, each holding one or more part files:

    events/
      dt=2026-11-01/part-00000.parquet
      dt=2026-11-01/part-00001.parquet
      dt=2026-11-01/_SUCCESS
      dt=2026-11-02/part-00000.parquet

The key may be any name (``day``, ``dt``, ``date``, ...) but one per export, and its values are
dates (``2026-11-01`` or ``20261101``); days are ordered by date, whatever the spelling. Files
and directories whose name starts with ``_`` or ``.`` are a writer's markers and scratch
(``_SUCCESS``, ``_temporary/``, ``.part-00000.crc``) and are skipped; any other file must be
Parquet. The older layout, ``day-0000.parquet``, ``day-0001.parquet``, ... in one directory,
is read as one day a file, ordered by number.

A row may carry the key as a column too (some writers repeat it); nothing here reads it: the
day is the partition's.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recmtl.data.files import open_filesystem
from recmtl.errors import DataError

_LEGACY = re.compile(r"day-(\d+)\.parquet")


@dataclass(frozen=True)
class RawDay:
    """One day of a raw export: its entry under the root and its Parquet files.

    ``name`` is the entry as written (``dt=2026-11-01``, ``day-0003.parquet``); ``label`` is
    stable and readable (``2026-11-01``, ``day-0003``); ``number`` counts days (the date's
    ordinal, or NNNN), so consecutive days differ by one.
    """

    name: str
    label: str
    number: int
    files: tuple[str, ...]  # local paths or URIs, as polars and `recmtl prepare` read them
    paths: tuple[str, ...] = field(repr=False)  # the same files as paths of ``fs``
    fs: pafs.FileSystem = field(repr=False, compare=False)
    root: str = ""  # the export: a local directory or a URI
    key: str | None = None  # the partition key; None for day-NNNN.parquet files

    @property
    def date(self) -> dt.date | None:
        return dt.date.fromordinal(self.number) if self.key else None


def find_days(uri: str) -> list[RawDay] | None:
    """The days of the export at ``uri``, in order; None when it is neither layout (a single
    file, or a directory of other Parquet files, which `recmtl prepare` reads whole)."""
    fs, base = open_filesystem(uri)
    base = base.rstrip("/")
    try:
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            return None
        listed = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except OSError as e:
        raise DataError(f"{uri}: cannot list it ({' '.join(str(e).split())})") from None
    top: dict[str, list[str]] = {}  # entry under the root -> its files, relative to the root
    is_file: dict[str, bool] = {}
    for info in listed:
        rel = info.path[len(base):].strip("/")
        parts = rel.split("/")
        if parts[0].startswith(("_", ".")):
            continue
        files = top.setdefault(parts[0], [])
        if len(parts) == 1:
            is_file[rel] = info.type == pafs.FileType.File
        elif info.type == pafs.FileType.File and not any(p.startswith(("_", "."))
                                                         for p in parts[1:]):
            files.append(rel)
    root = uri.rstrip("/") if "://" in uri else base

    def day(name: str, label: str, number: int, rels: list[str], key: str | None) -> RawDay:
        rels = sorted(rels)
        return RawDay(name, label, number, tuple(f"{root}/{r}" for r in rels),
                      tuple(f"{base}/{r}" for r in rels), fs, root, key)

    # an object store may list a partition only through the keys under it
    hive = sorted(n for n in top if "=" in n and not is_file.get(n, False))
    if hive:
        return [day(name, date.isoformat(), date.toordinal(), top[name], key)
                for name, key, date in _hive_partitions(uri, top, hive)]
    legacy = {n: _LEGACY.fullmatch(n) for n in top}
    numbered = [(int(m.group(1)), n) for n, m in legacy.items() if m and is_file.get(n)]
    if not top or len(numbered) < len(top):
        return None
    return [day(n, f"day-{k:04d}", k, [n], None) for k, n in sorted(numbered)]


def _hive_partitions(uri: str, top: dict[str, list[str]], hive: list[str]
                     ) -> list[tuple[str, str, dt.date]]:
    """(name, key, date) of every partition, by date; one key, dates, Parquet files only."""
    others = sorted(set(top) - set(hive))
    if others:
        raise DataError(f"{uri}: {others[0]!r} is not a <key>=<date>/ partition; expected only "
                        "partition directories of one key (and _ or . prefixed markers)")
    keys = sorted({n.split("=", 1)[0] for n in hive})
    if len(keys) > 1:
        raise DataError(f"{uri}: partitions of more than one key ({', '.join(keys)}); expected "
                        "one date key for the whole export")
    seen: dict[dt.date, str] = {}
    for name in hive:
        key, value = name.split("=", 1)
        date = parse_date(urllib.parse.unquote(value))
        if date is None:
            raise DataError(f"{uri}/{name}: partition value {value!r} is not a date; expected "
                            f"{key}=YYYY-MM-DD or {key}=YYYYMMDD")
        if date in seen:
            raise DataError(f"{uri}/{name}: the same day as {seen[date]}; expected one "
                            "partition a day")
        seen[date] = name
        wrong = [r for r in top[name] if not r.endswith(".parquet")]
        if wrong:
            raise DataError(f"{uri}/{wrong[0]}: not a Parquet part file; expected *.parquet "
                            "files (and _ or . prefixed markers) in a partition")
    return [(name, keys[0], date) for date, name in sorted(seen.items())]


def parse_date(text: str) -> dt.date | None:
    """``2026-11-01`` or ``20261101`` (ISO 8601), or None."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def check_days(days: list[RawDay], where: str, contiguous: bool = True) -> None:
    """Every day has rows and, when ``contiguous``, no day is missing between the first and
    the last; the error names the day."""
    for before, after in zip(days, days[1:], strict=False):
        if contiguous and after.number != before.number + 1:
            raise DataError(f"{where}: day {_missing(before)} is missing (between "
                            f"{before.name} and {after.name}); expected one for every day")
    for day in days:
        if not day.files:
            raise DataError(f"{day.root}/{day.name}: the partition has no Parquet part files; "
                            "expected at least one file with rows for every day")
        if not sum(_rows(day, p) for p in day.paths):
            raise DataError(f"{day.root}/{day.name}: the partition's {len(day.files)} Parquet "
                            "file(s) hold no rows; expected rows for every day")


def _missing(before: RawDay) -> str:
    if before.key:
        return f"{before.key}={dt.date.fromordinal(before.number + 1).isoformat()}"
    return f"day-{before.number + 1:04d}.parquet"


def _rows(day: RawDay, path: str) -> int:
    try:
        with day.fs.open_input_file(path) as f:
            return int(pq.read_metadata(f).num_rows)
    except OSError as e:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())})"
                        ) from None


def read_rows(day: RawDay, columns: list[str] | None = None) -> pa.Table:
    """The day's rows (its part files in name order), widths unified as Arrow permits; without
    the partition key column some writers repeat in each file (the day is the partition's)."""
    parts = []
    for path in day.paths:
        with day.fs.open_input_file(path) as f:
            table = pq.read_table(f, columns=columns)
        if day.key and day.key in table.column_names and day.key not in (columns or ()):
            table = table.drop_columns([day.key])
        parts.append(table)
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(f"{day.root}/{day.name}: its part files' columns differ in kind of "
                        f"type ({' '.join(str(e).split())})") from None


def select(days: list[RawDay], labels: tuple[str, ...], where: str) -> list[RawDay]:
    """The days named by ``labels`` (``2026-11-01`` or ``20261101``, or ``day-0003``), in the
    export's order."""
    by_label = {d.label: d for d in days}
    picked = set()
    for text in labels:
        date = parse_date(text)
        label = date.isoformat() if date and days and days[0].key else text
        if label not in by_label:
            held = f"{days[0].label} .. {days[-1].label}" if days else "no days"
            raise DataError(f"{where}: no day {text!r}; the export holds {held}")
        picked.add(label)
    return [d for d in days if d.label in picked]
