"""A Feast repository made here (local provider, file offline store): the point-in-time join
feeds `recmtl prepare`, and every row gets the feature values as of its own timestamp."""

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

feast = pytest.importorskip("feast")

from pipelines.feature_store.prepare import prepare  # noqa: E402
from pipelines.feature_store.spec import load_spec  # noqa: E402

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": "shop", "provider": "local", "registry": str(repo / "registry.db"),
        "offline_store": {"type": "file"},
        "online_store": {"type": "sqlite", "path": str(repo / "online.db")},
        "entity_key_serialization_version": 3}))
    # user_stats changes every day: a row must see the value of the day before its event
    days = [T0 + dt.timedelta(days=d) for d in range(6)]
    stats = pd.DataFrame({"user_id": np.repeat(np.arange(5), len(days)),
                          "event_timestamp": days * 5,
                          "ctr_7d": [u * 10 + d for u in range(5) for d in range(len(days))]})
    stats["ctr_7d"] = stats["ctr_7d"].astype("float32")
    stats.to_parquet(repo / "user_stats.parquet")
    user = feast.Entity(name="user", join_keys=["user_id"])
    source = feast.FileSource(path=str(repo / "user_stats.parquet"),
                              timestamp_field="event_timestamp")
    view = feast.FeatureView(name="user_stats", entities=[user], ttl=dt.timedelta(days=30),
                             schema=[feast.Field(name="ctr_7d", dtype=feast.types.Float32)],
                             source=source)
    feast.FeatureStore(repo_path=str(repo)).apply([user, view])
    return repo


def test_point_in_time_join_then_prepare(tmp_path):
    repo = _repo(tmp_path)
    rng = np.random.default_rng(0)
    n = 200
    hours = np.sort(rng.integers(1, 24 * 6, n))
    entities = pd.DataFrame({
        "user_id": rng.integers(0, 5, n),
        "event_timestamp": [T0 + dt.timedelta(hours=int(h)) for h in hours],
        "item": rng.integers(0, 20, n),
        "click": (rng.random(n) < 0.3).astype("int8")})
    entities.to_parquet(tmp_path / "entities.parquet")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "feast_shop", "output": str(tmp_path / "out"), "labels": ["click"],
        "feast": {"repo": str(repo), "entities": str(tmp_path / "entities.parquet"),
                  "features": ["user_stats:ctr_7d"]},
        "sparse": [{"name": "item_id", "column": "item"},
                   {"name": "user", "column": "user_id", "transform": "hash", "buckets": 16}],
        "dense": [{"name": "ctr_7d", "transform": "none"}],
        "keep": ["event_timestamp", "user_id"],
        "split": {"kind": "time", "column": "event_timestamp", "valid_from": "2026-11-05",
                  "test_from": "2026-11-06"}}))
    stats = prepare(load_spec(spec_path))
    assert stats["rows_in"] == n
    rows = pd.concat([pq.read_table(tmp_path / "out" / s).to_pandas()
                      for s in ("train", "valid", "test")])
    assert len(rows) == n
    # as of its timestamp a row sees the latest daily value at or before it: day = floor(hours/24)
    ts = pd.to_datetime(rows["event_timestamp"], utc=True)
    day = ((ts - pd.Timestamp(T0)).dt.total_seconds() // 86400).astype(int)
    np.testing.assert_array_equal(rows["ctr_7d"].to_numpy(), (rows["user_id"] * 10 + day).to_numpy())

