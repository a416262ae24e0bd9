"""Day over day: `recmtl prepare SPEC --previous DIR` starts from an earlier preparation.

Every vocabulary value known in ``DIR/vocab/<table>.parquet`` keeps its id (its embedding row);
values new in today's train (at least ``min_count`` times today) take the lowest free rows, in
train-frequency order: rows freed by retired values first (``recycled``), then rows after the
highest id. A value unseen in train for ``incremental.retire_after_days`` days is retired: it
maps to the OOV id 0 and its row is free for a new value.

Days: with a time split on a timestamp or date column, a preparation's day is the latest date
of its train rows, and a value's ``last_seen`` the latest date of the train rows holding it
(days since 1970-01-01, in the column's time zone). Otherwise days count preparations: a fresh
one is day 0, each ``--previous`` one its parent's day + 1, and ``last_seen`` is the day of
the last preparation whose train rows held the value. A value is retired when
``day - last_seen >= retire_after_days``.

Sizes: a vocabulary table keeps its size while its ids fit; otherwise it grows to
``ceil(V * (1 + headroom)) + 1`` rows (V ids, plus the OOV row 0). A fresh preparation whose
spec has an ``incremental`` section is sized the same way; without one, ``V + 1`` as ever.
Hash and identity tables keep their sizes (the spec's ``buckets``).

Dense statistics: ``frozen`` (the default) reuses the previous means, standard deviations and
bucket boundaries, so a warm-started model sees today's rows on yesterday's scale; ``refresh``
fits them on today's train (``stats.json`` records today's fit under ``incremental`` either
way).

Written beside the usual outputs: ``vocab/<table>.parquet`` gains ``last_seen``;
``transforms.json`` and ``stats.json`` gain ``version`` (a content hash of the transforms,
sizes, dense statistics and vocabularies), ``parent_version`` and ``incremental`` (clock, day,
settings, per-table ``high_water``: the highest id ever assigned); with a previous
preparation, ``remap/<table>.parquet`` (int64 ``old_id``, ``new_id``: row ``old_id`` of the
previous table is row ``new_id`` of this one, the OOV row 0 included; rows not listed as a
``new_id`` start fresh) and ``remap/remap.json``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.feature_store.spec import IncrementalSpec, PrepareSpec, SparseSpec
from recmtl.errors import DataError
from recmtl.export.raw import TRANSFORMS_FORMAT

_EPOCH = dt.date(1970, 1, 1)
_VERSIONED = ("format", "nulls", "sparse", "bucketized", "dense")
VOCAB_SCHEMA = {"value": pl.String, "id": pl.Int64, "count": pl.Int64, "last_seen": pl.Int64}
_AFRESH = ("an incremental preparation keeps the previous one's tables and transforms; "
           "prepare afresh (without --previous) to change them")


@dataclass(frozen=True)
class Previous:
    """An earlier preparation: its ``transforms.json`` and vocabularies."""

    path: Path
    transforms: dict[str, Any]
    vocabs: dict[str, pl.DataFrame]  # table -> value, id, count, last_seen

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.transforms["incremental"])


def load_previous(spec: PrepareSpec) -> Previous | None:
    """``spec.previous`` read and checked against the spec (tables, transforms, dense
    features), before any pass over the export."""
    if not spec.previous:
        return None
    root = Path(spec.previous)
    path = root / "transforms.json"
    if not path.is_file():
        raise DataError(f"{root}: not a preparation to start from (no transforms.json); "
                        "previous must be the output directory of an earlier `recmtl prepare`")
    try:
        transforms = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(transforms, dict) or transforms.get("format") != TRANSFORMS_FORMAT:
        raise DataError(f"{path}: not a transforms file of format {TRANSFORMS_FORMAT!r}")
    if "version" not in transforms or "incremental" not in transforms:
        raise DataError(f"{path}: has no version or incremental state (written before "
                        "incremental preparation existed); prepare that data again first")
    _check_compatible(spec, transforms, path)
    vocabs = {}
    for entry in transforms["sparse"]:
        if entry["transform"] == "vocab" and entry["table"] not in vocabs:
            file = root / entry["vocab"]
            try:
                frame = pl.read_parquet(file, columns=list(VOCAB_SCHEMA))
            except Exception as e:  # noqa: BLE001 - missing, corrupt or without a column
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise DataError(f"{file}: not a readable vocabulary with columns "
                                f"{list(VOCAB_SCHEMA)} ({first})") from None
            vocabs[entry["table"]] = frame.cast(VOCAB_SCHEMA)  # type: ignore[arg-type]
    return Previous(root, transforms, vocabs)


def _dense_kind(entry: dict[str, Any]) -> str:
    return {(False, False): "none", (True, False): "log1p", (False, True): "standardize",
            (True, True): "log1p_standardize"}[(entry["log1p"], entry["standardize"])]


def _check_compatible(spec: PrepareSpec, transforms: dict[str, Any], path: Path) -> None:
    def fail(what: str) -> None:
        raise DataError(f"{path}: {what}; {_AFRESH}")

    theirs = {e["table"]: e for e in transforms["sparse"]}
    ours: dict[str, SparseSpec] = {}
    for f in spec.sparse:
        ours.setdefault(f.table_name, f)
    if set(theirs) != set(ours):
        fail(f"tables {sorted(theirs)} there, {sorted(ours)} in the spec")
    for name, f in ours.items():
        e = theirs[name]
        if e["transform"] != f.transform:
            fail(f"table {name!r} uses transform {e['transform']} there, {f.transform} in "
                 "the spec")
        if f.transform != "vocab" and e["size"] != f.buckets:
            fail(f"table {name!r} has {e['size']} buckets there, {f.buckets} in the spec")
    their_dense = ({d["name"]: _dense_kind(d) for d in transforms["dense"]}
                   | {d["name"]: "bucketize" for d in transforms["bucketized"]})
    our_dense = {d.name: d.transform for d in spec.dense}
    if their_dense != our_dense:
        fail(f"dense features {their_dense} there, {our_dense} in the spec")


def _day_text(clock: str, day: int) -> str:
    return str(_EPOCH + dt.timedelta(days=day)) if clock == "date" else f"preparation {day}"


@dataclass(frozen=True)
class Chain:
    """Where this preparation stands: its previous one, its day and its settings."""

    spec: PrepareSpec
    settings: IncrementalSpec
    previous: Previous | None
    clock: str  # "date" | "preparations"
    day: int
    day_expr: pl.Expr  # a train row -> its day

    @property
    def headroom(self) -> float | None:
        """None: a fresh preparation of a spec without ``incremental`` (sized V + 1)."""
        return self.settings.headroom if self.previous or self.spec.incremental else None

    def fit_vocab(self, train: pl.LazyFrame, name: str, features: list[SparseSpec]
                  ) -> dict[str, Any]:
        """The vocabulary of table ``name``: known values keep their ids, new ones take the
        lowest free rows in train-frequency order, stale ones retire."""
        counts = _train_counts(train, features, self.day_expr)
        min_count = features[0].min_count
        prev = self.previous.vocabs[name] if self.previous else pl.DataFrame(schema=VOCAB_SCHEMA)
        old_size = self._previous_size(name)
        hw = int(self.previous.state["tables"][name]["high_water"]) if self.previous else 0
        known = (prev.join(counts, on="value", how="left", suffix="_today")
                 .with_columns(pl.col("count_today").fill_null(0).alias("count"),
                               pl.max_horizontal("last_seen", "last_seen_today")
                               .alias("last_seen"))
                 .select(list(VOCAB_SCHEMA)))
        after = self.settings.retire_after_days
        stale = (self.day - pl.col("last_seen") >= after) if after else pl.lit(False)
        kept = known.filter(~stale)
        fresh = (counts.join(prev.select("value"), on="value", how="anti")
                 .filter(pl.col("count") >= min_count)
                 .sort(["count", "value"], descending=[True, False]))
        kept_ids = kept["id"].to_numpy()
        free = np.setdiff1d(np.arange(1, old_size or 1, dtype=np.int64), kept_ids)
        start = old_size or 1
        extra = max(0, fresh.height - len(free))
        new_ids = np.concatenate([free[:fresh.height],
                                  np.arange(start, start + extra, dtype=np.int64)])
        vocab = pl.concat([kept, fresh.with_columns(id=pl.Series(new_ids, dtype=pl.Int64))
                           .select(list(VOCAB_SCHEMA))]).sort("id")
        top = int(vocab["id"].max() or 0)  # type: ignore[arg-type]
        out: dict[str, Any] = {
            "transform": "vocab", "keys": vocab["value"].to_list(), "ids": vocab["id"].to_list(),
            "counts": vocab["count"].to_list(), "last_seen": vocab["last_seen"].to_list(),
            "size": _sized(top + 1, old_size, self.headroom), "min_count": min_count,
            "high_water": max(hw, top)}
        if self.previous:
            recycled = np.sort(new_ids[new_ids <= hw])
            out |= {"old_size": old_size, "kept": kept.height, "new": fresh.height,
                    "retired": known.height - kept.height, "recycled": len(recycled),
                    "recycled_rows": recycled.tolist(),
                    "remap_ids": [0, *np.sort(kept_ids).tolist()]}
        return out

    def _previous_size(self, table: str) -> int | None:
        if not self.previous:
            return None
        return next(int(e["size"]) for e in self.previous.transforms["sparse"]
                    if e["table"] == table)

    def dense(self, fitted: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The dense statistics to apply: today's fit, or the previous ones when frozen."""
        if not self.previous or self.settings.dense_stats == "refresh":
            return fitted
        t = self.previous.transforms
        return ({d["name"]: {"mean": d["mean"], "std": d["std"]} for d in t["dense"]}
                | {d["name"]: {"boundaries": d["boundaries"]} for d in t["bucketized"]})

    def record(self, transforms: dict[str, Any], tables: dict[str, dict[str, Any]]
               ) -> dict[str, Any]:
        """``version``, ``parent_version`` and ``incremental`` for transforms.json and
        stats.json."""
        state = {"clock": self.clock, "day": self.day,
                 "date": _day_text(self.clock, self.day) if self.clock == "date" else None,
                 "previous": str(self.previous.path) if self.previous else None,
                 "retire_after_days": self.settings.retire_after_days,
                 "headroom": self.headroom, "dense_stats": self.settings.dense_stats,
                 "tables": {n: {"high_water": t["high_water"]} for n, t in tables.items()
                            if t["transform"] == "vocab"}}
        return {"version": content_version(transforms, tables),
                "parent_version": self.previous.transforms["version"] if self.previous else None,
                "incremental": state}

    def write_remap(self, out: Path, tables: dict[str, dict[str, Any]], version: str) -> None:
        """``remap/<table>.parquet`` and ``remap/remap.json``; a fresh preparation removes a
        stale ``remap/``."""
        target = out / "remap"
        if target.exists():
            shutil.rmtree(target)
        if not self.previous:
            return
        target.mkdir(parents=True)
        summary = {}
        for name, t in tables.items():
            if t["transform"] != "vocab":
                continue
            ids = pl.Series(t["remap_ids"], dtype=pl.Int64)
            pl.DataFrame({"old_id": ids, "new_id": ids}).write_parquet(target / f"{name}.parquet")
            summary[name] = {"old_size": t["old_size"], "new_size": int(t["size"]),
                             "kept": t["kept"], "new": t["new"], "retired": t["retired"],
                             "recycled": t["recycled"], "recycled_rows": t["recycled_rows"]}
        remap = {"from_version": self.previous.transforms["version"], "to_version": version,
                 "tables": summary}
        (target / "remap.json").write_text(json.dumps(remap, indent=1))


def begin(spec: PrepareSpec, dtypes: dict[str, pl.DataType], train: pl.LazyFrame,
          previous: Previous | None) -> Chain:
    """This preparation's clock and day (``train``: the train rows of the export)."""
    settings = spec.incremental or IncrementalSpec()
    column = spec.split.column
    dtype = dtypes.get(column) if column else None
    if spec.split.kind == "time" and (isinstance(dtype, pl.Datetime) or dtype == pl.Date):
        col = pl.col(column)  # type: ignore[arg-type]
        day_expr = (col.dt.date() if isinstance(dtype, pl.Datetime) else col
                    ).cast(pl.Int32).cast(pl.Int64)
        clock, day = "date", int(train.select(day_expr.max()).collect().item())
    else:
        clock = "preparations"
        day = int(previous.state["day"]) + 1 if previous else 0
        day_expr = pl.lit(day, pl.Int64)
    if previous:
        state = previous.state
        where = previous.path / "transforms.json"
        if state["clock"] != clock:
            raise DataError(f"{where}: days counted by {state['clock']} there, by {clock} here "
                            "(a time split on a timestamp or date column counts dates); "
                            f"{_AFRESH}")
        if day < int(state["day"]):
            raise DataError(f"{spec.source}: train rows end on {_day_text(clock, day)}, before "
                            f"those of the previous preparation {previous.path} "
                            f"({_day_text(clock, int(state['day']))}); expected a later export")
    return Chain(spec, settings, previous, clock, day, day_expr)


def _train_counts(train: pl.LazyFrame, features: list[SparseSpec], day: pl.Expr
                  ) -> pl.DataFrame:
    """value (text), count and last_seen (latest day) of every non-null train value of the
    table's features (list elements counted one by one)."""
    parts = []
    for f in features:
        part = train.select(pl.col(f.source).alias("value"), day.alias("day"))
        if f.multi_valued:
            part = part.explode("value")
        parts.append(part.select(pl.col("value").cast(pl.String), "day"))
    return (pl.concat(parts).drop_nulls("value").group_by("value")
            .agg(pl.len().cast(pl.Int64).alias("count"),
                 pl.col("day").max().cast(pl.Int64).alias("last_seen"))
            .collect())


def _sized(rows: int, old_size: int | None, headroom: float | None) -> int:
    """Rows of a vocabulary table whose ids need ``rows`` rows (OOV row included)."""
    if old_size is not None and rows <= old_size:
        return old_size
    if headroom is None:
        return rows
    return math.ceil((rows - 1) * (1 + Fraction(str(headroom)))) + 1  # exact: no 10*1.2 > 12


def content_version(transforms: dict[str, Any], tables: dict[str, dict[str, Any]]) -> str:
    """16 hex digits of sha256 over the transforms (sizes, dense statistics, bucket
    boundaries, null policies) and every vocabulary's value -> id pairs. Floats count to 10
    significant digits: another summation order of the same data is the same version."""
    h = hashlib.sha256(json.dumps(_rounded({k: transforms[k] for k in _VERSIONED}),
                                  sort_keys=True).encode())
    for name in sorted(tables):
        t = tables[name]
        if t["transform"] == "vocab":
            h.update(json.dumps([name, t["keys"], t["ids"]]).encode())
    return h.hexdigest()[:16]


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.10g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x
