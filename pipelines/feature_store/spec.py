"""The feature schema of a raw feature-store export, in YAML, for `recmtl prepare`.

It says which raw columns become which training columns and how:

    name: shop
    source: exports/events/            # Parquet file, directory, Hive partitions, pyarrow URI
    days: ["2026-10-20", "2026-10-21"] # optional: only these days of a partitioned source
    output: data/shop
    base_config: configs/shop.yaml     # the generated training config starts from it
    sparse:
      - {name: user_id, transform: hash, buckets: 1000000}
      - {name: item_id, transform: vocab, min_count: 5}
      - {name: clicked_items, column: clicked_item_ids, table: item_id, multi_valued: true}
      - {name: hist_items, table: item_id, multi_valued: true, max_len: 50}   # a sequence
      - {name: hist_categories, multi_valued: true, max_len: 50, aligned_with: hist_items}
    dense:
      - {name: price, transform: log1p_standardize}
      - {name: age, transform: bucketize, num_buckets: 10}   # becomes a sparse feature
    labels: [click, conversion]
    group: user_id                     # GAUC groups (hashed to int64 when strings)
    split: {kind: time, column: ts, valid_from: "2026-10-25", test_from: "2026-10-28"}
    nulls: {sparse: oov, dense: mean}
    previous: data/shop-2026-10-31     # optional: start from that preparation (--previous)
    incremental: {retire_after_days: 30, headroom: 0.2, dense_stats: frozen}

Sparse transforms: ``vocab`` (ids 1..V by train frequency, values seen fewer than
``min_count`` times in train and values never seen there map to 0, the OOV id), ``hash``
(blake2b-64 of the value's text, mod ``buckets - 1``, plus 1; 0 is null), ``identity``
(integer ids already in ``[0, num_embeddings)``) and ``managed`` (an open id space: the raw id
is blake2b-64 of the value's text shifted right by one bit, null is 0, and the trainer's
managed-collision table of ``buckets`` rows gives rows to the frequent ids as training sees
them; no vocabulary pass). Features naming the same ``table`` share one
embedding table and one id space (a vocabulary fit on all of their train values). Dense
transforms: ``none``, ``log1p``, ``standardize``, ``log1p_standardize`` (statistics from train)
and ``bucketize`` (``num_buckets`` train quantiles -> a sparse feature with ids 1..n, 0 for null).
Behaviour sequences are list columns ordered oldest first with a ``max_len``: prepare keeps
each row's ``max_len`` most recent ids (the list's tail) and counts the rows it truncated and
the empty or null lists (``stats.json``, per split); ``aligned_with`` names the sequence a side
list (a category per item) runs beside: their lists must have equal lengths row by row (an
error names the file and row otherwise) and share ``max_len``. Every feature reading a column
sees the same truncated lists.
Null policies: ``sparse: oov`` maps null ids to 0 and counts them, ``error`` refuses them;
``dense: mean`` fills the train mean (after the transform, so 0 when standardised) and counts,
``error`` refuses. NaN or infinite floats and labels outside {0, 1} are always errors.
``previous`` and ``incremental``: day-over-day preparation (``pipelines/feature_store/incremental.py``).
A day-partitioned ``source`` (Hive ``<key>=<date>/`` directories, or ``day-NNNN.parquet``
files: ``pipelines/feature_store/partitions.py``) is read in date order; ``days`` reads some
of its days only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recmtl.config import ConfigError, build_dataclass, read_yaml_mapping

SPARSE_TRANSFORMS = ("vocab", "hash", "identity", "managed")
DENSE_TRANSFORMS = ("none", "log1p", "standardize", "log1p_standardize", "bucketize")


@dataclass(frozen=True)
class SparseSpec:
    name: str
    column: str | None = None  # default: name
    table: str | None = None  # default: name
    transform: str = "vocab"
    min_count: int = 1
    buckets: int | None = None  # hash, managed: the table size; identity: num_embeddings
    multi_valued: bool = False
    dim: int = 16
    pooling: str = "sum"
    max_len: int | None = None  # a behaviour sequence: keep the most recent max_len ids
    aligned_with: str | None = None  # a side list of that sequence (equal lengths per row)

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def table_name(self) -> str:
        return self.table or self.name


@dataclass(frozen=True)
class DenseSpec:
    name: str
    column: str | None = None
    transform: str = "standardize"
    num_buckets: int = 10  # bucketize
    dim: int = 16  # bucketize: the embedding dim of its table

    @property
    def source(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class SplitSpec:
    """``hash``: a stable hash of ``column`` (default: the row position in the export; name a
    user id to keep each user in one split) picks the split. ``time``: rows before
    ``valid_from`` train, then valid, and test from ``test_from`` on."""

    kind: str = "hash"
    column: str | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    valid_from: str | None = None
    test_from: str | None = None


@dataclass(frozen=True)
class NullPolicy:
    sparse: str = "oov"  # oov | error
    dense: str = "mean"  # mean | error


@dataclass(frozen=True)
class FeastSource:
    """Build the raw export with Feast's point-in-time join (``pipelines/feature_store/feast_source.py``)."""

    repo: str  # the Feast repository (feature_store.yaml)
    entities: str  # Parquet: entity keys, the event timestamp, labels
    features: tuple[str, ...]  # "feature_view:feature" references
    timestamp_column: str = "event_timestamp"


@dataclass(frozen=True)
class IncrementalSpec:
    """Day over day (``pipelines/feature_store/incremental.py``): a vocabulary value unseen in
    train for ``retire_after_days`` days gives its row up (None: never); a table that must grow
    grows to ``ceil(V * (1 + headroom)) + 1`` rows; dense statistics ``frozen`` (yesterday's)
    or ``refresh`` (fit on today's train)."""

    retire_after_days: int | None = None
    headroom: float = 0.2
    dense_stats: str = "frozen"


@dataclass(frozen=True)
class PrepareSpec:
    name: str
    output: str
    labels: tuple[str, ...]
    source: str = ""  # the export; or built from ``feast``
    days: tuple[str, ...] = ()  # of a day-partitioned source: only these days (default: all)
    feast: FeastSource | None = None
    sparse: tuple[SparseSpec, ...] = ()
    dense: tuple[DenseSpec, ...] = ()
    group: str | None = None
    weight: str | None = None
    keep: tuple[str, ...] = ()  # copied unchanged (true probabilities, slice columns, ...)
    split: SplitSpec = field(default_factory=SplitSpec)
    nulls: NullPolicy = field(default_factory=NullPolicy)
    rows_per_file: int = 250_000
    row_group_size: int = 32_768
    base_config: str | None = None
    previous: str | None = None  # an earlier preparation's output directory to start from
    incremental: IncrementalSpec | None = None  # None: defaults, and no head-room when fresh


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> PrepareSpec:
    path = Path(path)
    raw = read_yaml_mapping(path)
    spec: PrepareSpec = build_dataclass(PrepareSpec, raw | (overrides or {}), str(path))
    if spec.base_config and not Path(spec.base_config).is_absolute():
        spec = _replace(spec, base_config=str((path.parent / spec.base_config).resolve()))
    if spec.feast:  # paths in the spec are relative to it
        feast = spec.feast
        repo, entities = (str((path.parent / p).resolve()) if "://" not in p else p
                          for p in (feast.repo, feast.entities))
        spec = _replace(spec, feast=FeastSource(repo, entities, feast.features,
                                                feast.timestamp_column))
    check_spec(spec, str(path))
    return spec


def _replace(spec: PrepareSpec, **kw: Any) -> PrepareSpec:
    import dataclasses

    return dataclasses.replace(spec, **kw)


def _check_sequences(spec: PrepareSpec, fail: Any) -> None:
    by_name = {f.name: f for f in spec.sparse}
    lengths: dict[str, int | None] = {}
    for f in spec.sparse:
        where = f"sparse.{f.name}"
        if f.max_len is not None and (not f.multi_valued or f.max_len < 1):
            fail(f"{where}.max_len: a sequence is a list column (multi_valued: true) with "
                 "max_len >= 1")
        if lengths.setdefault(f.source, f.max_len) != f.max_len:
            fail(f"{where}.max_len: every feature reading column {f.source!r} must share "
                 "max_len (they see the same truncated lists)")
        if f.aligned_with is not None:
            other = by_name.get(f.aligned_with)
            if other is None or other.max_len is None or other is f:
                fail(f"{where}.aligned_with: {f.aligned_with!r} is not another sequence feature")
            elif f.max_len != other.max_len:
                fail(f"{where}.max_len: must equal that of {f.aligned_with!r} ({other.max_len}), "
                     "the sequence it is aligned with")


def check_spec(spec: PrepareSpec, source: str) -> None:
    def fail(msg: str) -> None:
        raise ConfigError(f"{source}: {msg}")

    if bool(spec.source) == bool(spec.feast):
        fail("give exactly one of source (a Parquet export) and feast (a Feast repository)")
    if spec.days and not spec.source:
        fail("days: picks days of a partitioned source; feast builds one export")
    if spec.feast and not spec.feast.features:
        fail("feast.features: at least one 'feature_view:feature' reference is required")
    names = [f.name for f in spec.sparse] + [f.name for f in spec.dense]
    if len(set(names)) != len(names):
        fail(f"sparse/dense: duplicate feature name in {names}")
    if not spec.labels:
        fail("labels: at least one label column is required")
    tables: dict[str, SparseSpec] = {}
    for f in spec.sparse:
        where = f"sparse.{f.name}"
        if f.transform not in SPARSE_TRANSFORMS:
            fail(f"{where}.transform: {f.transform!r} not in {SPARSE_TRANSFORMS}")
        if f.transform in ("hash", "identity", "managed") and (f.buckets is None or f.buckets < 2):
            fail(f"{where}.buckets: {f.transform} needs buckets >= 2 (the table size)")
        if f.min_count < 1 or f.dim < 1:
            fail(f"{where}: min_count and dim must be >= 1")
        first = tables.setdefault(f.table_name, f)
        if (first.transform, first.buckets, first.dim) != (f.transform, f.buckets, f.dim):
            fail(f"{where}.table: features sharing table {f.table_name!r} must share transform, "
                 f"buckets and dim (as {first.name!r} has)")
    _check_sequences(spec, fail)
    for d in spec.dense:
        if d.transform not in DENSE_TRANSFORMS:
            fail(f"dense.{d.name}.transform: {d.transform!r} not in {DENSE_TRANSFORMS}")
        if d.transform == "bucketize" and d.num_buckets < 2:
            fail(f"dense.{d.name}.num_buckets: must be >= 2")
    s = spec.split
    if s.kind not in ("hash", "time"):
        fail(f"split.kind: {s.kind!r} not in ('hash', 'time')")
    if s.kind == "time" and not (s.column and s.valid_from and s.test_from):
        fail("split: a time split needs column, valid_from and test_from")
    if s.kind == "hash" and not (0 <= s.valid_fraction and 0 <= s.test_fraction
                                 and s.valid_fraction + s.test_fraction < 1):
        fail("split: valid_fraction + test_fraction must be in [0, 1)")
    if spec.nulls.sparse not in ("oov", "error") or spec.nulls.dense not in ("mean", "error"):
        fail("nulls: sparse in ('oov', 'error'), dense in ('mean', 'error')")
    if spec.rows_per_file < 1 or spec.row_group_size < 1:
        fail("rows_per_file and row_group_size must be >= 1")
    inc = spec.incremental
    if inc and inc.retire_after_days is not None and inc.retire_after_days < 1:
        fail("incremental.retire_after_days: must be >= 1 (or null: never retire)")
    if inc and not inc.headroom >= 0:
        fail(f"incremental.headroom: {inc.headroom} must be >= 0")
    if inc and inc.dense_stats not in ("frozen", "refresh"):
        fail(f"incremental.dense_stats: {inc.dense_stats!r} not in ('frozen', 'refresh')")
