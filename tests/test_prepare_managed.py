"""`recmtl prepare` with a ``managed`` transform: raw ids are blake2b-64 of the value's text
shifted right by one bit (null: 0), no vocabulary; the config it writes marks the table
managed; serving's raw transforms give the same ids. The reference is hashlib, here."""

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.feature_store.prepare import prepare
from recmtl.config import load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.raw import RawTransforms
from tests.raw_export import raw_columns, write_export, write_spec


def _open_id(value):
    if value is None:
        return 0
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("managed")
    cols = raw_columns()
    cols["user"] = [None if i % 11 == 0 else u for i, u in enumerate(cols["user"])]
    sparse = [{"name": "user_id", "column": "user", "transform": "managed", "buckets": 16,
               "dim": 8},
              {"name": "item_id", "column": "item", "transform": "managed", "buckets": 32,
               "dim": 8},
              {"name": "clicked_items", "column": "clicked_item_ids", "table": "item_id",
               "multi_valued": True, "transform": "managed", "buckets": 32, "dim": 8}]
    spec = write_spec(tmp, write_export(tmp, cols), sparse=sparse, group=None)
    prepare(spec)
    return cols, tmp / "out"


def test_managed_columns_hold_the_open_ids_of_the_raw_values(prepared):
    cols, out = prepared
    table = pa.concat_tables(pq.read_table(out / s) for s in ("train", "valid", "test"))
    by_ts = {}
    for i, ts in enumerate(cols["ts"]):
        by_ts.setdefault(ts, []).append(i)
    got = table.to_pydict()
    for k, ts in enumerate(got["ts"]):
        matches = [i for i in by_ts[ts]
                   if _open_id(cols["item"][i]) == got["item_id"][k]
                   and _open_id(cols["user"][i]) == got["user_id"][k]]
        assert matches, k
        i = matches[0]
        expected = [_open_id(v) for v in cols["clicked_item_ids"][i] or []]
        assert got["clicked_items"][k] == expected
    assert 0 in got["user_id"] and all(0 <= v < 2**63 - 1 for v in got["item_id"])


def test_the_written_config_marks_the_tables_managed_and_trains_from_raw_ids(prepared):
    _, out = prepared
    written = yaml.safe_load((out / "shop.yaml").read_text())
    tables = {t["name"]: t for t in written["features"]["tables"]}
    assert tables["user_id"]["managed_collision"] == {} and tables["item_id"]["num_embeddings"] == 32
    cfg = load_config(out / "shop.yaml")
    assert cfg.features.tables[0].managed_collision.eviction == "distance_lfu"
    # The reader takes the open ids as they are (their range is the whole int64 space).
    batch = next(iter(ParquetBatchReader(f"{out}/train", FeatureSchema.from_config(cfg), 64)
                      .epoch(0)))
    assert int(batch.sparse["item_id"].values().max()) > 32


def test_serving_replays_the_managed_transform(prepared):
    cols, out = prepared
    raw = pa.table(cols).slice(0, 50)
    got = RawTransforms(out / "transforms.json").apply(raw).to_pydict()
    assert got["user_id"] == [_open_id(v) for v in cols["user"][:50]]
    assert got["clicked_items"] == [[_open_id(v) for v in lst or []]
                                    for lst in cols["clicked_item_ids"][:50]]
