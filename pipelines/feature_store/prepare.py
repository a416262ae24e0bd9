"""`recmtl prepare SPEC.yaml`: a raw feature-store export -> training Parquet, with polars (lazy).

Reads the export described by a feature schema (``pipelines/feature_store/spec.py``), splits it by
time or by a stable hash, fits vocabularies, dense statistics and bucket boundaries on the
train split only, and writes for each split part files of ``rows_per_file`` rows with row
groups of ``row_group_size``: int64 ids in range, float32 dense values, int8 labels. Beside them:

- ``stats.json``: rows per split, null counts per column, what each null policy did (nulls
  mapped to the OOV id, nulls filled with the mean) and ids unseen in train, per split; table
  sizes, vocabulary sizes, dense statistics; ``type_casts``: columns read as one type across
  files that differ in width or unit (``pipelines/feature_store/sources.py``);
- ``vocab/<table>.parquet``: ``value -> id`` for every vocabulary;
- ``transforms.json``: every transform with what it fit, which an exported bundle carries so
  that serving replays them on raw rows (``recmtl.export.raw``);
- ``<name>.yaml``: a training config with the tables sized from the statistics (``base:`` the
  spec's ``base_config``).

With ``previous`` (``--previous DIR``) it starts from an earlier preparation: ids kept, new
values appended, stale ones retired, an id remap written (``pipelines/feature_store/incremental.py``).

Every row of the export lands in exactly one split; nothing is dropped. Bad input stops the
job with the file, column, count and expectation: labels outside {0, 1} or null, NaN or
infinite floats, ids out of range for ``identity``, nulls where the policy is ``error``, a
missing column, a column whose type its role cannot use or whose kind of type differs between
files, an export without rows or an empty train split.

The work is lazy: each pass (checks, fits, one write per split) streams the export.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from pipelines.feature_store import incremental, sequences
from pipelines.feature_store.sources import (
    ExportSchema,
    check_types,
    needed_columns,
    read_schemas,
    scan,
    source_files,
)
from pipelines.feature_store.spec import DenseSpec, PrepareSpec, SparseSpec
from recmtl.errors import DataError
from recmtl.export.raw import TRANSFORMS_FORMAT, blake2b64
from recmtl.storage import check_writable, download_dir, is_uri, upload_dir

SPLITS = ("train", "valid", "test")
_HASH_BUCKETS = 10_000
_FILE, _ROW, _SPLIT = "__file", "__row", "__split"


def stable_hash(values: pl.Series) -> np.ndarray:
    """A 64-bit hash of each value that no library version changes: splitmix64 of integers,
    blake2b-64 of the UTF-8 text of anything else. Serving reproduces it from the manifest."""
    if values.dtype.is_integer():
        z = values.to_numpy().astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return np.asarray(z ^ (z >> np.uint64(31)))
    return blake2b64(str(v) for v in values.to_list())


def split_expr(spec: PrepareSpec, dtypes: dict[str, pl.DataType]) -> pl.Expr:
    """0 train, 1 valid, 2 test."""
    s = spec.split
    if s.kind == "time":
        col = pl.col(s.column)  # type: ignore[arg-type]
        dtype = dtypes[s.column]  # type: ignore[index]
        if isinstance(dtype, pl.Datetime):  # a boundary without a zone is in the column's zone
            valid, test = (pl.lit(v).str.to_datetime(time_unit=dtype.time_unit,
                                                     time_zone=dtype.time_zone)
                           for v in (s.valid_from, s.test_from))
        elif dtype == pl.Date:
            valid, test = (pl.lit(v).str.to_date() for v in (s.valid_from, s.test_from))
        else:
            valid, test = pl.lit(float(s.valid_from)), pl.lit(float(s.test_from))  # type: ignore[arg-type]
        return (pl.when(col < valid).then(0).when(col < test).then(1).otherwise(2)).cast(pl.Int8)
    key = pl.col(s.column) if s.column else pl.col(_ROW).cast(pl.Int64)
    bucket = key.map_batches(lambda v: pl.Series(stable_hash(v) % np.uint64(_HASH_BUCKETS)),
                             return_dtype=pl.UInt64)
    train_end = _HASH_BUCKETS * (1 - s.valid_fraction - s.test_fraction)
    valid_end = _HASH_BUCKETS * (1 - s.test_fraction)
    return (pl.when(bucket < train_end).then(0).when(bucket < valid_end).then(1).otherwise(2)
            ).cast(pl.Int8)


def _values(f: SparseSpec) -> pl.Expr:
    """A feature's ids as one text column (lists exploded), for fitting and hashing."""
    col = pl.col(f.source).explode() if f.multi_valued else pl.col(f.source)
    return col.cast(pl.String).alias("value")


def _map_ids(f: SparseSpec, keys: list[str], ids: list[int]) -> pl.Expr:
    """Text value -> id; null and unknown -> 0."""
    def mapped(e: pl.Expr) -> pl.Expr:
        return e.cast(pl.String).replace_strict(keys, ids, default=0, return_dtype=pl.Int64)

    if f.multi_valued:
        return pl.col(f.source).list.eval(mapped(pl.element())).fill_null([]).alias(f.name)
    return mapped(pl.col(f.source)).alias(f.name)


def open_ids(values: pl.Series) -> pl.Series:
    """A managed table's raw ids: blake2b-64 of each value's text, shifted right by one bit
    (an int64 below the maximum, torchrec's empty mark); null is 0."""
    text = values.cast(pl.String)
    ids = (blake2b64(str(v) for v in text.fill_null("").to_list()) >> np.uint64(1)).astype(np.int64)
    return pl.Series(np.where(text.is_null().to_numpy(), 0, ids), dtype=pl.Int64)


def _sparse_expr(f: SparseSpec, table: dict[str, Any]) -> pl.Expr:
    kind = table["transform"]
    if kind == "identity":
        return pl.col(f.source).cast(pl.List(pl.Int64) if f.multi_valued else pl.Int64).alias(f.name)
    if kind == "managed":
        if f.multi_valued:
            return pl.col(f.source).list.eval(pl.element().map_batches(
                open_ids, return_dtype=pl.Int64)).fill_null([]).alias(f.name)
        return pl.col(f.source).map_batches(open_ids, return_dtype=pl.Int64).alias(f.name)
    return _map_ids(f, table.get("keys", []), table.get("ids", []))


def fit_tables(frame: pl.LazyFrame, spec: PrepareSpec, chain: incremental.Chain
               ) -> dict[str, dict[str, Any]]:
    """Per table: its size and, for vocab and hash, the value -> id mapping (vocabularies:
    ``incremental.Chain.fit_vocab``, which starts from the previous preparation if any)."""
    train = frame.filter(pl.col(_SPLIT) == 0)
    tables: dict[str, list[SparseSpec]] = {}
    for f in spec.sparse:
        tables.setdefault(f.table_name, []).append(f)
    out: dict[str, dict[str, Any]] = {}
    for name, features in tables.items():
        first = features[0]
        if first.transform in ("identity", "managed"):
            out[name] = {"size": first.buckets, "transform": first.transform}
            continue
        if first.transform == "vocab":
            out[name] = chain.fit_vocab(train, name, features)
        else:
            values = pl.concat([frame.select(_values(f)) for f in features]).drop_nulls()
            unique = values.unique().collect()["value"]
            hashed = stable_hash(unique) % np.uint64(first.buckets - 1) + np.uint64(1)  # type: ignore[operator]
            out[name] = {"transform": "hash", "keys": unique.to_list(),
                         "ids": hashed.astype(np.int64).tolist(), "size": first.buckets,
                         "hash": "blake2b-64 of the value's UTF-8 text mod (size - 1), plus 1"}
    return out


def fit_dense(frame: pl.LazyFrame, spec: PrepareSpec) -> dict[str, dict[str, Any]]:
    """Means and standard deviations, or bucket boundaries, of every dense feature on the
    train split, in one pass."""
    exprs = []
    for d in spec.dense:
        x = pl.col(d.source).cast(pl.Float64)
        if "log1p" in d.transform:
            x = x.log1p()
        if d.transform == "bucketize":
            exprs += [x.quantile(i / d.num_buckets).alias(f"{d.name}:q{i}")
                      for i in range(1, d.num_buckets)]
        else:
            exprs += [x.mean().alias(f"{d.name}:mean"), x.std().alias(f"{d.name}:std")]
    if not exprs:
        return {}
    row = frame.filter(pl.col(_SPLIT) == 0).select(exprs).collect().row(0, named=True)
    out: dict[str, dict[str, Any]] = {}
    for d in spec.dense:
        if d.transform == "bucketize":
            qs = (row[f"{d.name}:q{i}"] for i in range(1, d.num_buckets))
            out[d.name] = {"boundaries": sorted({float(v) for v in qs if v is not None})}
        else:
            out[d.name] = {"mean": float(row[f"{d.name}:mean"] or 0.0),
                           "std": float(row[f"{d.name}:std"] or 0.0) or 1.0}
    return out


def _dense_expr(d: DenseSpec, stats: dict[str, Any]) -> pl.Expr:
    x = pl.col(d.source).cast(pl.Float64)
    if "log1p" in d.transform:
        x = x.log1p()
    if d.transform == "bucketize":
        ids = pl.sum_horizontal([(x >= b).cast(pl.Int64) for b in stats["boundaries"]] or
                                [pl.lit(0, pl.Int64)]) + 1
        return pl.when(x.is_null()).then(0).otherwise(ids).cast(pl.Int64).alias(d.name)
    if "standardize" in d.transform:
        x = (x - stats["mean"]) / stats["std"]
    return x.fill_null(_dense_fill(d, stats)).cast(pl.Float32).alias(d.name)


def _dense_fill(d: DenseSpec, stats: dict[str, Any]) -> float:
    """What a null dense value becomes (``nulls.dense: mean``): the train mean, after the
    transform, so 0 when standardised."""
    return 0.0 if "standardize" in d.transform else stats["mean"]


def check_values(frame: pl.LazyFrame, spec: PrepareSpec) -> None:
    """Raises on input no policy covers, naming file, column and first row. One pass."""
    checks: dict[str, tuple[pl.Expr, str]] = {}
    for label in spec.labels:
        checks[f"label:{label}"] = (~pl.col(label).cast(pl.Float64).is_in([0.0, 1.0])
                                    | pl.col(label).is_null(), "labels 0 or 1, not null")
    for d in spec.dense:
        x = pl.col(d.source).cast(pl.Float64)
        checks[f"nonfinite:{d.source}"] = (x.is_nan() | x.is_infinite(), "finite floats")
        if spec.nulls.dense == "error":
            checks[f"null:{d.source}"] = (x.is_null(), "no nulls (nulls.dense: error)")
    for f in spec.sparse:
        if spec.nulls.sparse == "error":
            null = pl.col(f.source).is_null()
            if f.multi_valued:
                null = null | pl.col(f.source).list.eval(pl.element().is_null()).list.any()
            checks[f"null:{f.source}"] = (null, "no null ids (nulls.sparse: error)")
        if f.transform == "identity":
            def outside(e: pl.Expr, size: int = f.buckets) -> pl.Expr:  # type: ignore[assignment]
                return (e < 0) | (e >= size)

            outside_ids = (pl.col(f.source).list.eval(outside(pl.element())).list.any()
                           if f.multi_valued else outside(pl.col(f.source)))
            checks[f"range:{f.source}"] = (outside_ids.fill_null(False), f"ids in [0, {f.buckets})")
    checks |= sequences.alignment_checks(spec)
    if spec.weight:
        w = pl.col(spec.weight).cast(pl.Float64)
        checks[f"weight:{spec.weight}"] = (w.is_null() | w.is_nan() | (w < 0),
                                           "finite, non-negative sample weights")
    violations = frame.select([e.sum().alias(k) for k, (e, _) in checks.items()]).collect().row(
        0, named=True) if checks else {}
    for key, count in violations.items():
        if count:
            expr, expected = checks[key]
            where = frame.filter(expr)
            first = where.select(_FILE, _ROW).head(1).collect().row(0)
            column = key.split(":", 1)[1]
            raise DataError(f"{first[0]}: column {column!r}: {count} row(s) violate the schema; "
                            f"expected {expected} (first at row {first[1]} of the export)")


def check_train_rows(frame: pl.LazyFrame, spec: PrepareSpec) -> None:
    """Vocabularies and statistics are fit on train: an empty train split is an error."""
    if frame.select((pl.col(_SPLIT) == 0).sum()).collect().item():
        return
    s = spec.split
    rule = (f"every {s.column} is on or after valid_from {s.valid_from!r}" if s.kind == "time"
            else f"valid_fraction + test_fraction = {s.valid_fraction + s.test_fraction}")
    raise DataError(f"{spec.source}: the train split is empty ({rule}); vocabularies and "
                    "statistics are fit on train rows")


def prepare(spec: PrepareSpec) -> dict[str, Any]:
    """Prepares ``spec`` into ``spec.output``: a local directory or a URI (``s3://bucket/prefix``,
    credentials from the environment: ``recmtl/storage.py``). Object storage has no directory
    for polars' local sink to stream part files into, so a URI output is written to a local
    staging directory and copied there; the config it writes points at the URI. A URI
    ``previous`` is copied down first."""
    if not is_uri(spec.output) and not (spec.previous and is_uri(spec.previous)):
        return _prepare(spec, root=str(Path(spec.output).resolve()))
    with tempfile.TemporaryDirectory(prefix="recmtl-prepare-") as tmp:
        previous_uri = spec.previous if spec.previous and is_uri(spec.previous) else None
        if previous_uri:
            previous = download_dir(previous_uri, Path(tmp) / "previous")
            spec = dataclasses.replace(spec, previous=str(previous))
        if not is_uri(spec.output):
            return _prepare(spec, root=str(Path(spec.output).resolve()), previous_uri=previous_uri)
        check_writable(spec.output)  # a missing bucket fails before the work, not after
        staged = Path(tmp) / "out"
        stats = _prepare(dataclasses.replace(spec, output=str(staged)), root=spec.output,
                         previous_uri=previous_uri)
        upload_dir(staged, spec.output)
    print(f"copied to {spec.output}")
    return stats


def _prepare(spec: PrepareSpec, root: str, previous_uri: str | None = None) -> dict[str, Any]:
    """``root``: where the output will be read from (the generated config's ``data.root``);
    ``previous_uri``: where ``spec.previous``, a local copy, came from (recorded instead)."""
    if spec.feast:
        from pipelines.feature_store.feast_source import export_from_feast

        joined = export_from_feast(spec.feast, Path(spec.output) / "feast-export")
        spec = dataclasses.replace(spec, source=str(joined), feast=None)
    previous = incremental.load_previous(spec)
    files, readable, fs = source_files(spec.source, spec.days)
    schema = read_schemas(files, needed_columns(spec), fs)
    if not schema.rows:
        raise DataError(f"{spec.source}: the export's {len(files)} Parquet file(s) hold no rows")
    check_types(spec, schema)
    for col, cast in schema.casts.items():
        print(f"column {col!r}: read as {cast['type']}; {cast['files']} of {len(files)} file(s) "
              f"({cast['rows']:,} rows) cast from {', '.join(cast['from'])}")
    dtypes = schema.polars
    frame = (scan(readable, schema, _FILE).with_row_index(_ROW)
             .with_columns(split_expr(spec, dtypes).alias(_SPLIT)))
    check_values(frame, spec)
    check_train_rows(frame, spec)
    frame = sequences.cut(frame, spec)
    chain = incremental.begin(spec, dtypes, frame.filter(pl.col(_SPLIT) == 0), previous)
    tables = fit_tables(frame, spec, chain)
    fitted = fit_dense(frame, spec)
    dense = chain.dense(fitted)

    outputs = [_sparse_expr(f, tables[f.table_name]) for f in spec.sparse]
    outputs += [_dense_expr(d, dense[d.name]) for d in spec.dense]
    outputs += [pl.col(c).cast(pl.Int8).alias(c) for c in spec.labels]
    if spec.group:
        g = pl.col(spec.group)
        outputs.append((g.cast(pl.Int64) if dtypes[spec.group].is_integer() else g.map_batches(
            lambda v: pl.Series((stable_hash(v) >> np.uint64(1)).astype(np.int64)),
            return_dtype=pl.Int64)).alias("group_id"))
    if spec.weight:
        outputs.append(pl.col(spec.weight).cast(pl.Float32).alias(spec.weight))
    outputs += [pl.col(c) for c in spec.keep]

    out = Path(spec.output)
    counts = split_counts(frame, spec, tables)
    for k, split in enumerate(SPLITS):
        target = out / split
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.parquet"):
            old.unlink()
        part = frame.filter(pl.col(_SPLIT) == k).select(outputs)
        if counts[split].get("__rows"):
            part.sink_parquet(pl.PartitionBy(target, max_rows_per_file=spec.rows_per_file),
                              row_group_size=spec.row_group_size, mkdir=True)
    transforms = _transforms(spec, tables, dense)
    record = chain.record(transforms, tables)
    if previous_uri:
        record["incremental"]["previous"] = previous_uri
    transforms |= record
    stats = _write_stats(spec, out, files, counts, tables, dense, schema) | record
    stats["incremental"] = record["incremental"] | {"dense_fit_today": fitted}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    (out / "transforms.json").write_text(json.dumps(transforms, indent=1))
    chain.write_remap(out, tables, record["version"])
    _write_config(spec, out, root, tables, dense)
    for split in SPLITS:
        print(f"{split}: {counts[split].get('__rows', 0):,} rows")
    print(f"wrote {out}/{{train,valid,test}}, stats.json, transforms.json, vocab/ and {spec.name}.yaml")
    return stats


def split_counts(frame: pl.LazyFrame, spec: PrepareSpec,
                 tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per split, in one pass: ``__rows``, null ids (``sparse:<feature>``, list elements
    counted), null dense values (``dense:<feature>``) and, for vocab features, non-null values
    that map to the OOV id 0 (``unseen:<feature>``: unseen in train or below ``min_count``)."""
    exprs = [pl.len().alias("__rows")]
    for f in spec.sparse:
        null = pl.col(f.source).is_null()
        if f.multi_valued:
            null = pl.col(f.source).list.eval(pl.element().is_null()).list.sum().fill_null(1)
        exprs.append(null.sum().alias(f"sparse:{f.name}"))
        t = tables[f.table_name]
        if t["transform"] == "vocab":
            values = (pl.col(f.source).explode() if f.multi_valued else pl.col(f.source)
                      ).cast(pl.String)
            known = pl.Series(t["keys"], dtype=pl.String).implode()
            exprs.append((values.is_not_null() & ~values.is_in(known)).sum()
                         .alias(f"unseen:{f.name}"))
    exprs += [pl.col(d.source).is_null().sum().alias(f"dense:{d.name}") for d in spec.dense]
    exprs += sequences.count_exprs(spec)
    out: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for row in frame.group_by(_SPLIT).agg(exprs).collect().iter_rows(named=True):
        out[SPLITS[row.pop(_SPLIT)]] = {k: int(v) for k, v in row.items()}
    return out


def _write_stats(spec: PrepareSpec, out: Path, files: list[str], counts: dict[str, Any],
                 tables: dict[str, dict[str, Any]], dense: dict[str, Any],
                 schema: ExportSchema) -> dict[str, Any]:
    """Writes ``vocab/<table>.parquet`` (value, id, count, last_seen); returns stats.json's
    content."""
    (out / "vocab").mkdir(parents=True, exist_ok=True)
    for name, t in tables.items():
        if t["transform"] == "vocab":
            pl.DataFrame({"value": t["keys"], "id": t["ids"], "count": t["counts"],
                          "last_seen": t["last_seen"]},
                         schema=incremental.VOCAB_SCHEMA).write_parquet(
                out / "vocab" / f"{name}.parquet")
    splits = {}
    for split in SPLITS:
        c = counts[split]
        policy = {}
        for f in spec.sparse:
            if c.get(f"sparse:{f.name}"):
                policy[f"nulls_to_oov/{f.name}"] = c[f"sparse:{f.name}"]
            if c.get(f"unseen:{f.name}"):
                policy[f"unseen_to_oov/{f.name}"] = c[f"unseen:{f.name}"]
        for d in spec.dense:
            if c.get(f"dense:{d.name}"):
                key = "nulls_to_zero_id" if d.transform == "bucketize" else "nulls_filled_mean"
                policy[f"{key}/{d.name}"] = c[f"dense:{d.name}"]
        policy |= sequences.policy_counts(spec, c)
        splits[split] = {"rows": c.get("__rows", 0), "policy_counts": policy,
                         "null_rates": {k: v / c["__rows"] for k, v in c.items()
                                        if k.startswith(("sparse:", "dense:"))
                                        and c.get("__rows")}}
    stats = {"name": spec.name, "source": spec.source, "files": files, "splits": splits,
             "rows_in": sum(s["rows"] for s in splits.values()),
             "tables": {n: {k: v for k, v in t.items() if not isinstance(v, list)}
                        for n, t in tables.items()},
             "dense": dense, "type_casts": schema.casts}
    return stats


def _transforms(spec: PrepareSpec, tables: dict[str, dict[str, Any]],
                dense: dict[str, Any]) -> dict[str, Any]:
    """``transforms.json``: what serving replays on raw rows (``recmtl.export.raw``)."""
    sparse = []
    for f in spec.sparse:
        t = tables[f.table_name]
        entry = {"name": f.name, "column": f.source, "table": f.table_name,
                 "multi_valued": f.multi_valued, "transform": t["transform"],
                 "size": int(t["size"])}
        if t["transform"] == "vocab":
            entry["vocab"] = f"vocab/{f.table_name}.parquet"
        if f.max_len is not None:
            entry["max_len"] = f.max_len
        sparse.append(entry)
    transforms = {
        "format": TRANSFORMS_FORMAT, "nulls": dataclasses.asdict(spec.nulls), "sparse": sparse,
        "bucketized": [{"name": d.name, "column": d.source,
                        "boundaries": dense[d.name]["boundaries"]}
                       for d in spec.dense if d.transform == "bucketize"],
        "dense": [{"name": d.name, "column": d.source, "log1p": "log1p" in d.transform,
                   "standardize": "standardize" in d.transform, **dense[d.name],
                   "fill": _dense_fill(d, dense[d.name])}
                  for d in spec.dense if d.transform != "bucketize"],
    }
    return transforms


def _write_config(spec: PrepareSpec, out: Path, root: str, tables: dict[str, dict[str, Any]],
                  dense: dict[str, Any]) -> None:
    sparse_tables = {f.table_name: f for f in spec.sparse}
    cfg_tables = [{"name": n, "num_embeddings": int(tables[n]["size"]), "dim": f.dim,
                   "pooling": f.pooling} | ({"managed_collision": {}} if f.transform == "managed"
                                            else {})
                  for n, f in sparse_tables.items()]
    cfg_sparse = [{"name": f.name, "table": f.table_name, "multi_valued": f.multi_valued}
                  for f in spec.sparse]
    for d in spec.dense:
        if d.transform == "bucketize":
            cfg_tables.append({"name": d.name, "dim": d.dim,
                               "num_embeddings": len(dense[d.name]["boundaries"]) + 2})
            cfg_sparse.append({"name": d.name, "table": d.name, "multi_valued": False})
    config: dict[str, Any] = {"name": spec.name, "data": {"root": root},
                              "features": {"tables": cfg_tables, "sparse": cfg_sparse,
                                           "dense": [d.name for d in spec.dense
                                                     if d.transform != "bucketize"]}}
    if spec.group:
        config["features"]["group"] = "group_id"
    if spec.base_config:
        config = {"base": spec.base_config} | config
    else:
        config["tasks"] = [{"name": label, "label": label} for label in spec.labels]
    (out / f"{spec.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
