"""`recmtl prepare --previous`: day over day on small hand-made exports.

The chain below (min_count 2, retire_after_days 2, headroom 0.5) is worked by hand:

    day 1, Nov 1: a5 b4 c3 d2 e1        -> a1 b2 c3 d4 (e below min_count); 4 ids: 7 rows
    day 2, Nov 2: a1 c2 f3 g3 h1 e1     -> known keep their ids; f5 g6 (tie: by value); h, e
                                           below min_count today; ids fit 7 rows: no growth
    day 3, Nov 3: a2 f1 i4 j2 k2        -> b, d last seen Nov 1: retired (3 - 1 >= 2); i, j
                                           take their rows 2, 4 (recycled), k the next, 7;
                                           8 rows needed > 7: ceil(7 * 1.5) + 1 = 12
    day 4, Nov 4: a1 i1 j1 k1 b2        -> c, g retired (last seen Nov 2); b, back, is new:
                                           the lowest free row, 3 (c's); row 6 stays free
"""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.feature_store.prepare import prepare
from pipelines.feature_store.spec import load_spec
from recmtl.config import ConfigError, load_config
from recmtl.errors import DataError
from recmtl.export.raw import RawTransforms

RECMTL = str(Path(sys.executable).with_name("recmtl"))
NOV = dt.datetime(2026, 11, 1)
DAYS = {  # day -> (train counts, test items)
    1: ({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}, ["b", "z"]),
    2: ({"a": 1, "c": 2, "f": 3, "g": 3, "h": 1, "e": 1}, ["f", "h"]),
    3: ({"a": 2, "f": 1, "i": 4, "j": 2, "k": 2}, ["b", "d", "i", "k"]),
    4: ({"a": 1, "i": 1, "j": 1, "k": 1, "b": 2}, ["b", "c", "g", "k"]),
}
VOCAB = {
    1: {"a": 1, "b": 2, "c": 3, "d": 4},
    2: {"a": 1, "b": 2, "c": 3, "d": 4, "f": 5, "g": 6},
    3: {"a": 1, "i": 2, "c": 3, "j": 4, "f": 5, "g": 6, "k": 7},
    4: {"a": 1, "i": 2, "b": 3, "j": 4, "f": 5, "k": 7},
}
SIZES = {1: 7, 2: 7, 3: 12, 4: 12}
INCREMENTAL = {"retire_after_days": 2, "headroom": 0.5, "dense_stats": "frozen"}


def _columns(day):
    """Train rows on Nov ``day`` (the counts), one valid row the next day, the test items the
    day after. Prices and ages shift from day to day."""
    counts, test = DAYS[day]
    start = NOV + dt.timedelta(days=day - 1)
    items = [v for v, n in counts.items() for _ in range(n)]
    ts = [start + dt.timedelta(hours=h) for h in range(len(items))]
    items.append("a")
    ts.append(start + dt.timedelta(days=1, hours=1))
    items += test
    ts += [start + dt.timedelta(days=2, hours=h) for h in range(len(test))]
    n = len(items)
    k = np.arange(n)
    return {"item": items, "user": [f"u{i % 5}" for i in range(n)],
            "price": (1.0 + day + (k * 0.37) % 3.0 * day).tolist(),
            "age": (20.0 + (k * 7 + day * 3) % 40).tolist(),
            "ts": ts, "click": (k % 2).astype(np.int8)}


def _spec_raw(tmp, day, previous=None, **changes):
    src = tmp / f"export-{day}"
    if not src.exists():
        src.mkdir()
        pq.write_table(pa.table(_columns(day)), src / "part.parquet")
    start = (NOV + dt.timedelta(days=day - 1)).date()
    raw = {
        "name": "daily", "source": str(src), "output": str(tmp / f"out-{day}"),
        "labels": ["click"],
        "sparse": [{"name": "item_id", "column": "item", "transform": "vocab", "min_count": 2,
                    "dim": 4},
                   {"name": "user_id", "column": "user", "transform": "hash", "buckets": 16,
                    "dim": 4}],
        "dense": [{"name": "price", "transform": "standardize"},
                  {"name": "age", "transform": "bucketize", "num_buckets": 3, "dim": 4}],
        "keep": ["ts"],
        "split": {"kind": "time", "column": "ts",
                  "valid_from": str(start + dt.timedelta(days=1)),
                  "test_from": str(start + dt.timedelta(days=2))},
        "incremental": dict(INCREMENTAL),
    }
    if previous:
        raw["previous"] = str(previous)
    return raw | changes


def _spec(tmp, day, previous=None, name="spec", **changes):
    path = tmp / f"{name}-{day}.yaml"
    path.write_text(yaml.safe_dump(_spec_raw(tmp, day, previous, **changes)))
    return path


def _prepare(tmp, day, previous=None, **changes):
    spec = load_spec(_spec(tmp, day, previous, **changes))
    prepare(spec)
    return Path(spec.output)


def _json(path):
    return json.loads(Path(path).read_text())


def _vocab(out):
    v = pq.read_table(out / "vocab" / "item_id.parquet").to_pydict()
    return dict(zip(v["value"], v["id"], strict=True))


def _split(out, split):
    return pq.read_table(out / split).sort_by("ts").to_pydict()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("daily")
    outs = {1: _prepare(tmp, 1)}
    for day in (2, 3, 4):
        outs[day] = _prepare(tmp, day, previous=outs[day - 1])
    return tmp, outs


def test_known_ids_keep_their_rows_new_values_follow_by_frequency(chain):
    tmp, outs = chain
    for day, out in outs.items():
        assert _vocab(out) == VOCAB[day], day
        cols = _columns(day)
        rows = sorted(zip(cols["ts"], cols["item"], strict=True))
        got = _split(out, "train")["item_id"] + _split(out, "valid")["item_id"] + \
            _split(out, "test")["item_id"]
        assert got == [VOCAB[day].get(v, 0) for _, v in rows], day
    # day 3's test: b and d retired -> OOV; i took b's old row
    assert _split(outs[3], "test")["item_id"] == [0, 0, 2, 7]


def test_vocab_files_record_todays_count_and_last_seen(chain):
    _, outs = chain
    v = pq.read_table(outs[4] / "vocab" / "item_id.parquet").to_pydict()
    nov = (NOV.date() - dt.date(1970, 1, 1)).days  # Nov 1 as days since 1970-01-01
    rows = {val: (i, c, s - nov + 1) for val, i, c, s in
            zip(v["value"], v["id"], v["count"], v["last_seen"], strict=True)}
    assert rows == {"a": (1, 1, 4), "i": (2, 1, 4), "b": (3, 2, 4), "j": (4, 1, 4),
                    "f": (5, 0, 3), "k": (7, 1, 4)}
    assert v["id"] == sorted(v["id"])


def test_headroom_sizes_tables_and_hash_tables_keep_theirs(chain):
    _, outs = chain
    for day, out in outs.items():
        cfg = load_config(out / "daily.yaml")
        sizes = {t.name: t.num_embeddings for t in cfg.features.tables}
        assert sizes["item_id"] == SIZES[day] and sizes["user_id"] == 16, day
        assert _json(out / "stats.json")["tables"]["item_id"]["size"] == SIZES[day]


def test_remap_is_written_for_every_vocab_table(chain):
    _, outs = chain
    assert not (outs[1] / "remap").exists()
    expected = {  # day -> (old_id == new_id rows, remap.json counts)
        2: ([0, 1, 2, 3, 4], {"old_size": 7, "new_size": 7, "kept": 4, "new": 2, "retired": 0,
                              "recycled": 0, "recycled_rows": []}),
        3: ([0, 1, 3, 5, 6], {"old_size": 7, "new_size": 12, "kept": 4, "new": 3, "retired": 2,
                              "recycled": 2, "recycled_rows": [2, 4]}),
        4: ([0, 1, 2, 4, 5, 7], {"old_size": 12, "new_size": 12, "kept": 5, "new": 1,
                                 "retired": 2, "recycled": 1, "recycled_rows": [3]}),
    }
    for day, (rows, counts) in expected.items():
        table = pq.read_table(outs[day] / "remap" / "item_id.parquet")
        assert table.schema == pa.schema([("old_id", pa.int64()), ("new_id", pa.int64())])
        remap = table.to_pydict()
        assert remap == {"old_id": rows, "new_id": rows}, day
        assert not set(counts["recycled_rows"]) & set(remap["new_id"])
        meta = _json(outs[day] / "remap" / "remap.json")
        assert meta["tables"] == {"item_id": counts}, day  # hash tables: no remap
        assert meta["from_version"] == _json(outs[day - 1] / "transforms.json")["version"]
        assert meta["to_version"] == _json(outs[day] / "transforms.json")["version"]
        # every value that kept its row: its id there is its id here
        before, after = VOCAB[day - 1], VOCAB[day]
        assert sorted(before[v] for v in before if v in after and after[v] == before[v]) == \
            rows[1:]


def test_versions_chain_and_are_content_hashes(chain, tmp_path):
    _, outs = chain
    transforms = {d: _json(o / "transforms.json") for d, o in outs.items()}
    assert transforms[1]["parent_version"] is None
    for day in (2, 3, 4):
        assert transforms[day]["parent_version"] == transforms[day - 1]["version"]
    assert len({t["version"] for t in transforms.values()}) == 4
    for day, out in outs.items():
        stats = _json(out / "stats.json")
        assert (stats["version"], stats["parent_version"]) == \
            (transforms[day]["version"], transforms[day]["parent_version"])
    again = _prepare(tmp_path, 1)  # the same data elsewhere: the same version
    assert _json(again / "transforms.json")["version"] == transforms[1]["version"]
    assert transforms[4]["incremental"]["date"] == "2026-11-04"
    assert transforms[4]["incremental"]["tables"] == {"item_id": {"high_water": 7}}


def _day1_train(day=1):
    cols = _columns(day)
    n = sum(DAYS[day][0].values())
    return np.array(cols["price"][:n]), np.array(cols["age"][:n])


def test_frozen_dense_statistics_transform_today_as_yesterday(chain):
    _, outs = chain
    price1, _ = _day1_train()
    mean, std = price1.mean(), price1.std(ddof=1)
    cols = _columns(2)
    order = np.argsort(np.array(cols["ts"], dtype="datetime64[us]"), kind="stable")
    price2 = np.array(cols["price"])[order]
    got = sum((_split(outs[2], s)["price"] for s in ("train", "valid", "test")), [])
    np.testing.assert_allclose(got, (price2 - mean) / std, rtol=1e-6, atol=1e-6)
    bounds = [_json(o / "transforms.json")["bucketized"][0]["boundaries"] for o in outs.values()]
    assert all(b == bounds[0] for b in bounds)
    age2 = np.array(cols["age"])[order]
    ages = sum((_split(outs[2], s)["age"] for s in ("train", "valid", "test")), [])
    assert ages == (1 + np.searchsorted(bounds[0], age2, side="right")).tolist()
    fit = _json(outs[2] / "stats.json")["incremental"]["dense_fit_today"]["price"]
    train2 = price2[:sum(DAYS[2][0].values())]
    assert fit["mean"] == pytest.approx(train2.mean())
    assert abs(fit["mean"] - mean) > 0.5  # the frozen statistics were not today's


def test_refreshed_dense_statistics_are_fit_on_today(chain, tmp_path):
    _, outs = chain
    out = _prepare(tmp_path, 2, previous=outs[1],
                   incremental=INCREMENTAL | {"dense_stats": "refresh"})
    price2, _ = _day1_train(2)
    got = _split(out, "train")["price"]
    np.testing.assert_allclose(got, (price2 - price2.mean()) / price2.std(ddof=1), rtol=1e-6,
                               atol=1e-6)
    fresh = _prepare(tmp_path, 2, output=str(tmp_path / "fresh-2"))
    assert _json(out / "transforms.json")["bucketized"] == \
        _json(fresh / "transforms.json")["bucketized"]
    assert _vocab(out) == VOCAB[2]  # ids still start from day 1


def test_days_count_preparations_without_a_time_split(tmp_path):
    split = {"kind": "hash", "valid_fraction": 0.0, "test_fraction": 0.0}
    one = _prepare(tmp_path, 1, split=split)
    two = _prepare(tmp_path, 2, previous=one, split=split,
                   incremental=INCREMENTAL | {"retire_after_days": 1})
    state = _json(two / "transforms.json")["incremental"]
    assert (state["clock"], state["day"], state["date"]) == ("preparations", 1, None)
    # every row is train here: day 2 holds a2 c2 f4 g3 h2 e1 (its valid and test rows too);
    # b, d are retired after 1 preparation without them; f, g take rows 2, 4, h the next free
    assert _vocab(two) == {"a": 1, "f": 2, "c": 3, "g": 4, "h": 5}
    remap = _json(two / "remap" / "remap.json")["tables"]["item_id"]
    assert (remap["retired"], remap["recycled_rows"]) == (2, [2, 4])


def test_serving_replays_an_incremental_vocabulary_with_free_rows(chain):
    _, outs = chain
    raw = RawTransforms(outs[4] / "transforms.json")
    cols = _columns(4)
    ids = raw.apply(pa.table(cols))["item_id"].to_pylist()
    assert ids == [VOCAB[4].get(v, 0) for v in cols["item"]]  # c, g (retired) -> 0


def _cli(*args):
    r = subprocess.run([RECMTL, "prepare", *map(str, args)], capture_output=True, text=True,
                       timeout=300)
    return r.returncode, r.stderr.splitlines()


def test_previous_through_the_command_line(chain, tmp_path):
    _, outs = chain
    spec = _spec(tmp_path, 2, output=str(tmp_path / "cli-2"))
    code, err = _cli(spec, "--previous", outs[1])
    assert code == 0, err
    assert _vocab(tmp_path / "cli-2") == VOCAB[2]
    assert _json(tmp_path / "cli-2" / "remap" / "remap.json")["from_version"] == \
        _json(outs[1] / "transforms.json")["version"]
    missing = tmp_path / "no-such-prep"
    code, err = _cli(spec, "--previous", missing)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"recmtl: error: {missing}: not a preparation to start from")


def test_a_previous_preparation_of_other_tables_or_transforms_is_refused(chain, tmp_path):
    _, outs = chain
    hashed = [{"name": "item_id", "column": "item", "transform": "hash", "buckets": 32,
               "dim": 4}, {"name": "user_id", "column": "user", "transform": "hash",
                           "buckets": 16, "dim": 4}]
    with pytest.raises(DataError, match=r"out-1/transforms.json: table 'item_id' uses "
                       r"transform vocab there, hash in the spec; an incremental"):
        _prepare(tmp_path, 2, previous=outs[1], sparse=hashed)
    with pytest.raises(DataError, match=r"transforms.json: dense features .*'price': "
                       r"'standardize'.* there, .*'log1p'.* in the spec"):
        _prepare(tmp_path, 2, previous=outs[1],
                 dense=[{"name": "price", "transform": "log1p"},
                        {"name": "age", "transform": "bucketize", "num_buckets": 3}])
    with pytest.raises(DataError, match=r"tables \['item_id', 'user_id'\] there, "
                       r"\['item_id'\] in the spec"):
        _prepare(tmp_path, 2, previous=outs[1], sparse=hashed[:1])


def test_an_older_export_or_a_stale_previous_is_refused(chain, tmp_path):
    _, outs = chain
    with pytest.raises(DataError, match="train rows end on 2026-11-02, before those of the "
                       "previous preparation .*out-3 .2026-11-03."):
        _prepare(tmp_path, 2, previous=outs[3])
    old = tmp_path / "old"
    old.mkdir()
    t = _json(outs[1] / "transforms.json")
    (old / "transforms.json").write_text(json.dumps(
        {k: v for k, v in t.items() if k not in ("version", "incremental")}))
    with pytest.raises(DataError, match="old/transforms.json: has no version or incremental"):
        _prepare(tmp_path, 2, previous=old)
    (old / "transforms.json").write_text(json.dumps(t))
    with pytest.raises(DataError, match="old/vocab/item_id.parquet: not a readable vocabulary"):
        _prepare(tmp_path, 2, previous=old)


@pytest.mark.parametrize("change, message", [
    ({"dense_stats": "thaw"}, "incremental.dense_stats: 'thaw'"),
    ({"headroom": -0.1}, "incremental.headroom: -0.1 must be >= 0"),
    ({"retire_after_days": 0}, "incremental.retire_after_days: must be >= 1"),
    ({"retire_days": 3}, r"unknown key\(s\) \['retire_days'\]"),
])
def test_bad_incremental_settings_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(_spec(tmp_path, 1, incremental=INCREMENTAL | change))
