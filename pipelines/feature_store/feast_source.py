"""Training rows from a Feast feature store: a point-in-time join, then `recmtl prepare`.

Given a Feast repository (``feature_store.yaml`` + registered feature views; any provider,
e.g. ``local`` with the ``file`` offline store) and a Parquet table of entities, event
timestamps and labels, ``get_historical_features`` joins each row to the feature values as
they were at its timestamp (no future leakage), and the result is written as the raw export
that the feature schema then prepares like any other. Feast keeps one row per (join keys,
timestamp); the distinct pairs are joined and the features merged back onto every entity row,
so the export has exactly the entity table's rows. Needs the ``feast`` extra
(``pip install -e ".[feast]"``).

In a spec::

    feast:
      repo: feature_repo/                 # holds feature_store.yaml
      entities: labels/impressions.parquet  # entity keys, event_timestamp, labels
      features: ["user_stats:ctr_7d", "item_stats:price"]
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.feature_store.spec import FeastSource


def export_from_feast(source: FeastSource, out_dir: str | Path) -> Path:
    """Runs the point-in-time join; returns the directory of the joined Parquet export."""
    try:
        from feast import FeatureStore
    except ImportError as e:
        raise ImportError("the spec names a Feast source, but feast is not installed: "
                          'pip install -e ".[feast]"') from e
    import pandas as pd

    entities = pd.read_parquet(source.entities)
    missing = [c for c in (source.timestamp_column,) if c not in entities.columns]
    if missing:
        raise ValueError(f"{source.entities}: column {missing[0]!r} is missing; expected the "
                         "event timestamp of each row (Feast joins features as of it)")
    if source.timestamp_column != "event_timestamp":
        entities = entities.rename(columns={source.timestamp_column: "event_timestamp"})
    store = FeatureStore(repo_path=str(source.repo))
    views = {ref.split(":", 1)[0] for ref in source.features}
    keys = sorted({k for v in views for k in store.get_feature_view(v).join_keys})
    absent = [k for k in keys if k not in entities.columns]
    if absent:
        raise ValueError(f"{source.entities}: join key {absent[0]!r} of the feature views is "
                         "missing")
    # Feast keeps one row per (join keys, timestamp): join the distinct pairs, then merge the
    # features back onto every entity row, so that no row is lost.
    pairs = entities[[*keys, "event_timestamp"]].drop_duplicates()
    features = store.get_historical_features(entity_df=pairs,
                                             features=list(source.features)).to_df()
    merged = entities.merge(features, on=[*keys, "event_timestamp"], how="left",
                            validate="many_to_one")
    if len(merged) != len(entities):
        raise RuntimeError(f"the Feast join returned {len(merged)} rows for "
                           f"{len(entities)} entity rows")
    joined = pa.Table.from_pandas(merged, preserve_index=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):
        old.unlink()
    pq.write_table(joined, out / "part-00000.parquet", row_group_size=65_536)
    return out
