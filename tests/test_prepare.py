"""`recmtl prepare`: a raw export with strings, lists, nulls and timestamps -> training Parquet.

References are computed here independently (numpy float64, hashlib, hand-built vocabularies).
"""

import datetime as dt
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.feature_store.prepare import prepare
from pipelines.feature_store.spec import load_spec
from recmtl.config import ConfigError, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.errors import DataError
from tests.raw_export import N, raw_columns, write_export, write_spec


def _read(out, split):
    return pq.read_table(out / split).to_pydict()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepare")
    cols = raw_columns()
    spec = write_spec(tmp, write_export(tmp, cols))
    stats = prepare(spec)
    return cols, spec, stats, tmp / "out"


def test_every_row_lands_in_one_split_and_time_never_leaks(prepared):
    cols, spec, stats, out = prepared
    parts = {s: _read(out, s) for s in ("train", "valid", "test")}
    assert sum(len(p["click"]) for p in parts.values()) == N == stats["rows_in"]
    valid_from, test_from = dt.datetime(2026, 11, 7), dt.datetime(2026, 11, 9)
    assert max(parts["train"]["ts"]) < valid_from <= min(parts["valid"]["ts"])
    assert max(parts["valid"]["ts"]) < test_from <= min(parts["test"]["ts"])
    assert sorted(parts["train"]["ts"] + parts["valid"]["ts"] + parts["test"]["ts"]) == \
        sorted(cols["ts"])
    files = sorted((out / "train").glob("*.parquet"))
    assert len(files) >= 2 and all(pq.ParquetFile(f).metadata.row_group(0).num_rows <= 32
                                   for f in files)


def test_vocabulary_is_fit_on_train_only_and_shared_by_the_table(prepared):
    cols, spec, stats, out = prepared
    is_train = np.array(cols["ts"], dtype="datetime64[us]") < np.datetime64("2026-11-07")
    values = [str(v) for v in np.array(cols["item"])[is_train]]
    values += [str(v) for i, lst in enumerate(cols["clicked_item_ids"]) if is_train[i] and lst
               for v in lst if v is not None]
    counts = {v: values.count(v) for v in set(values)}
    kept = sorted((v for v, c in counts.items() if c >= 3), key=lambda v: (-counts[v], v))
    expected = {v: i + 1 for i, v in enumerate(kept)}
    vocab = pq.read_table(out / "vocab" / "item_id.parquet").to_pydict()
    assert dict(zip(vocab["value"], vocab["id"], strict=True)) == expected
    test = _read(out, "test")
    test_items = [str(v) for v, t in zip(cols["item"], cols["ts"], strict=True)
                  if t >= dt.datetime(2026, 11, 9)]
    assert test["item_id"] == [expected.get(v, 0) for v in test_items]  # 999: unseen -> 0
    assert stats["splits"]["test"]["policy_counts"]["unseen_to_oov/item_id"] >= 5
    train = _read(out, "train")
    train_lists = [lst for lst, t in zip(cols["clicked_item_ids"], cols["ts"], strict=True)
                   if t < dt.datetime(2026, 11, 7)]
    for got, raw in zip(train["clicked_items"], train_lists, strict=True):
        assert got == [0 if v is None else expected.get(str(v), 0) for v in (raw or [])]


def test_hash_and_group_reproduce_from_blake2b(prepared):
    cols, spec, stats, out = prepared
    train = _read(out, "train")
    users = [u for u, t in zip(cols["user"], cols["ts"], strict=True) if t < dt.datetime(2026, 11, 7)]
    digest = [int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little")
              for u in users]
    assert train["user_id"] == [d % 63 + 1 for d in digest]
    assert train["group_id"] == [d >> 1 for d in digest]


def test_dense_uses_train_statistics_and_counts_filled_nulls(prepared):
    cols, spec, stats, out = prepared
    ts = np.array(cols["ts"], dtype="datetime64[us]")
    price = np.array([np.nan if p is None else p for p in cols["price"]])
    is_train = ts < np.datetime64("2026-11-07")
    x = np.log1p(price[is_train])
    mean, std = np.nanmean(x), np.nanstd(x, ddof=1)
    test_rows = ts >= np.datetime64("2026-11-09")
    expected = np.nan_to_num((np.log1p(price[test_rows]) - mean) / std, nan=0.0)
    np.testing.assert_allclose(_read(out, "test")["price"], expected, rtol=1e-5, atol=1e-6)
    assert stats["splits"]["test"]["policy_counts"]["nulls_filled_mean/price"] == \
        int(np.isnan(price[test_rows]).sum())
    age = np.array(cols["age"])
    bounds = np.quantile(age[is_train], [0.25, 0.5, 0.75])  # polars' default: nearest rank
    got = np.array(_read(out, "train")["age"])
    assert got.min() >= 1 and got.max() <= 4
    assert np.mean(got == 1 + (age[is_train][:, None] >= bounds).sum(1)) > 0.95


def test_generated_config_trains_on_the_output(prepared):
    cols, spec, stats, out = prepared
    cfg = load_config(out / "shop.yaml")
    sizes = {t.name: t.num_embeddings for t in cfg.features.tables}
    assert sizes["user_id"] == 64 and sizes["item_id"] == stats["tables"]["item_id"]["size"]
    assert [t.name for t in cfg.tasks] == ["click", "conversion"]
    reader = ParquetBatchReader(str(out / "train"), FeatureSchema.from_config(cfg), 50)
    rows = sum(b.size for b in reader.epoch(0))
    assert rows == stats["splits"]["train"]["rows"]


def test_hash_split_by_user_keeps_each_user_in_one_split(tmp_path):
    src = write_export(tmp_path, raw_columns(seed=1))
    spec = write_spec(tmp_path, src, split={"kind": "hash", "column": "user", "valid_fraction": 0.2,
                                       "test_fraction": 0.2})
    prepare(spec)
    owners = {}
    for split in ("train", "valid", "test"):
        for g in _read(tmp_path / "out", split)["group_id"]:
            owners.setdefault(g, set()).add(split)
    assert len(owners) > 10 and all(len(s) == 1 for s in owners.values())


@pytest.mark.parametrize("column, value, message", [
    ("click", 2, "'click'.*expected labels 0 or 1"),
    ("price", float("nan"), "'price'.*expected finite floats"),
    ("price", float("inf"), "'price'.*expected finite floats"),
])
def test_bad_values_name_file_column_and_expectation(tmp_path, column, value, message):
    cols = raw_columns()
    cols[column] = list(cols[column])
    cols[column][300] = value
    src = write_export(tmp_path, cols)
    with pytest.raises(DataError, match=f"day-b.parquet: column {message}.*row 300"):
        prepare(write_spec(tmp_path, src))


def test_null_id_is_an_error_under_the_error_policy(tmp_path):
    cols = raw_columns()
    cols["user"][10] = None
    src = write_export(tmp_path, cols)
    prepare(write_spec(tmp_path, src))  # default policy: OOV, counted
    with pytest.raises(DataError, match="day-a.parquet: column 'user'.*no null ids"):
        prepare(write_spec(tmp_path, src, nulls={"sparse": "error"}))


def test_schema_drift_missing_column_and_corrupt_file(tmp_path):
    cols = raw_columns()
    src = write_export(tmp_path, cols)
    drifted = pa.table({**cols, "price": [str(p) for p in cols["price"]]})
    pq.write_table(drifted.slice(0, 10), src / "day-c.parquet")
    with pytest.raises(DataError, match="day-c.parquet: column 'price' has type string.*drift"):
        prepare(write_spec(tmp_path, src))
    (src / "day-c.parquet").unlink()
    pq.write_table(pa.table({k: v for k, v in cols.items() if k != "age"}).slice(0, 5),
                   src / "day-d.parquet")
    with pytest.raises(DataError, match="day-d.parquet: column 'age' is missing"):
        prepare(write_spec(tmp_path, src))
    (src / "day-d.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="day-d.parquet: not a readable Parquet file"):
        prepare(write_spec(tmp_path, src))


def test_unknown_key_and_bad_transform_in_the_schema(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'bukets'"):
        write_spec(tmp_path, tmp_path, sparse=[{"name": "u", "transform": "hash", "bukets": 3}])
    with pytest.raises(ConfigError, match="transform: 'sqrt'"):
        write_spec(tmp_path, tmp_path, dense=[{"name": "p", "transform": "sqrt"}])
    with pytest.raises(ConfigError, match="must share transform"):
        write_spec(tmp_path, tmp_path, sparse=[{"name": "a", "transform": "vocab"},
                                          {"name": "b", "table": "a", "transform": "hash",
                                           "buckets": 9}])


def test_stats_record_null_rates(prepared):
    cols, spec, stats, out = prepared
    rows = stats["splits"]["train"]["rows"]
    is_train = [t < dt.datetime(2026, 11, 7) for t in cols["ts"]]
    nulls = sum(1 for p, keep in zip(cols["price"], is_train, strict=True) if keep and p is None)
    assert stats["splits"]["train"]["null_rates"]["dense:price"] == pytest.approx(nulls / rows)
    assert json.loads((out / "stats.json").read_text())["rows_in"] == N


def test_policy_counts_go_to_mlflow(prepared, tmp_path):
    import mlflow

    from recmtl.train.tracking import log_data_stats

    cols, spec, stats, out = prepared
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        log_data_stats(str(out))
    metrics = mlflow.tracking.MlflowClient().get_run(run.info.run_id).data.metrics
    for split, s in stats["splits"].items():
        assert metrics[f"data/{split}/rows"] == s["rows"]
        for key, count in s["policy_counts"].items():
            assert metrics[f"data/{split}/{key}"] == count
    assert metrics["data/test/unseen_to_oov/item_id"] >= 5
    mlflow.set_tracking_uri(None)


def test_a_spec_takes_one_source(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "output": "o", "labels": ["y"], "source": "s",
                                    "feast": {"repo": "r", "entities": "e", "features": ["v:f"]}}))
    with pytest.raises(ConfigError, match="exactly one of source"):
        load_spec(path)
