"""`recmtl prepare` with behaviour sequences: lists cut to their ``max_len`` most recent ids
(the tail: lists are oldest first), side lists checked against their sequence, cuts and empty
histories counted per split, and serving's raw transforms cutting the same way. The
references are built here from the raw lists, row by row."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.feature_store.prepare import prepare
from recmtl.config import ConfigError
from recmtl.errors import DataError
from recmtl.export.raw import RawTransforms
from tests.raw_export import write_export, write_spec

N, MAX_LEN = 240, 3
DAY0 = dt.datetime(2026, 11, 1)


def _columns(seed=0):
    rng = np.random.default_rng(seed)
    hist, cats = [], []
    for i in range(N):
        if i % 19 == 0:
            hist.append(None)
            cats.append(None)
            continue
        items = rng.integers(0, 20, int(rng.integers(0, 8))).tolist()
        hist.append(items)
        cats.append([v % 5 for v in items])
    click = (rng.random(N) < 0.3).astype(np.int8)
    return {"item": rng.integers(0, 20, N).astype(np.int64), "hist_items": hist,
            "hist_cats": cats, "price": rng.lognormal(size=N),
            "ts": [DAY0 + dt.timedelta(hours=int(h)) for h in np.sort(rng.integers(0, 240, N))],
            "click": click, "conversion": (click * (rng.random(N) < 0.4)).astype(np.int8)}


SPARSE = [{"name": "item_id", "column": "item", "transform": "vocab", "dim": 8},
          {"name": "hist_items", "table": "item_id", "multi_valued": True, "max_len": MAX_LEN,
           "dim": 8},
          {"name": "hist_cats", "transform": "hash", "buckets": 8, "multi_valued": True,
           "max_len": MAX_LEN, "aligned_with": "hist_items", "dim": 8}]
DENSE = [{"name": "price", "transform": "log1p_standardize"}]


def _spec(tmp, cols, **changes):
    return write_spec(tmp, write_export(tmp, cols, split_at=N // 2), sparse=SPARSE, dense=DENSE,
                      group=None, keep=["ts"], **changes)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sequences")
    cols = _columns()
    stats = prepare(_spec(tmp, cols))
    return cols, stats, tmp / "out"


def test_sequences_keep_their_most_recent_ids(prepared):
    cols, _, out = prepared
    vocab = dict(zip(*pq.read_table(out / "vocab" / "item_id.parquet",
                                    columns=["value", "id"]).to_pydict().values(), strict=True))
    got = pa.concat_tables(pq.read_table(out / s) for s in ("train", "valid", "test"))
    by_ts = {}
    for i, ts in enumerate(cols["ts"]):
        by_ts.setdefault(ts, []).append(i)
    checked = 0
    for k, (ts, item) in enumerate(zip(got["ts"].to_pylist(), got["item_id"].to_pylist(),
                                       strict=True)):
        rows = [i for i in by_ts[ts] if vocab.get(str(cols["item"][i]), 0) == item]
        expected = [[vocab.get(str(v), 0) for v in (cols["hist_items"][i] or [])[-MAX_LEN:]]
                    for i in rows]
        assert got["hist_items"][k].as_py() in expected
        assert len(got["hist_cats"][k].as_py()) == len(got["hist_items"][k].as_py())
        checked += 1
    assert checked == N


def test_cuts_and_empty_histories_are_counted_per_split(prepared):
    cols, stats, _ = prepared
    lengths = [len(h) if h is not None else 0 for h in cols["hist_items"]]
    split = ["train" if t < dt.datetime(2026, 11, 7) else "valid" if t < dt.datetime(2026, 11, 9)
             else "test" for t in cols["ts"]]
    for name in ("train", "valid", "test"):
        counts = stats["splits"][name]["policy_counts"]
        cut = sum(1 for n, s in zip(lengths, split, strict=True) if s == name and n > MAX_LEN)
        empty = sum(1 for n, s in zip(lengths, split, strict=True) if s == name and n == 0)
        assert counts.get("truncated_to_max_len/hist_items", 0) == cut
        assert counts.get("empty_sequences/hist_cats", 0) == empty
    assert stats["splits"]["train"]["policy_counts"]["truncated_to_max_len/hist_items"] > 0


def test_serving_cuts_raw_lists_like_prepare(prepared):
    cols, _, out = prepared
    raw = pa.table(cols).slice(7, 60)  # a slice: offsets that do not start at 0
    got = RawTransforms(out / "transforms.json").apply(raw)
    prepared_rows = pa.concat_tables(pq.read_table(out / s) for s in ("train", "valid", "test"))
    by_ts = dict(zip(prepared_rows["ts"].to_pylist(), prepared_rows["hist_items"].to_pylist(),
                     strict=False))
    for ts, lst, n in zip(raw["ts"].to_pylist(), got["hist_items"].to_pylist(),
                          raw["hist_items"].to_pylist(), strict=True):
        assert len(lst) == min(len(n or []), MAX_LEN)
        if sum(1 for t in cols["ts"] if t == ts) == 1:  # a unique timestamp names one row
            assert lst == by_ts[ts]


def test_a_side_list_out_of_step_is_an_error_naming_file_and_row(tmp_path):
    cols = _columns()
    cols["hist_cats"] = list(cols["hist_cats"])
    bad = next(i for i in range(N // 2, N) if cols["hist_cats"][i])
    cols["hist_cats"][bad] = cols["hist_cats"][bad][:-1]
    with pytest.raises(DataError, match=r"day-b\.parquet: column 'hist_cats'.*lists as long as "
                                        r"'hist_items'.*first at row"):
        prepare(_spec(tmp_path, cols))


@pytest.mark.parametrize(("changes", "message"), [
    ({"max_len": 0}, "max_len >= 1"),
    ({"multi_valued": False}, "multi_valued: true"),
    ({"max_len": 5}, "must equal that of 'hist_items'"),
    ({"aligned_with": "item_id"}, "not another sequence feature"),
])
def test_bad_sequence_specs_name_the_key(tmp_path, changes, message):
    sparse = [*SPARSE[:2], SPARSE[2] | changes]
    src = write_export(tmp_path, _columns(), split_at=N // 2)
    with pytest.raises(ConfigError, match=message):
        write_spec(tmp_path, src, sparse=sparse, dense=DENSE, group=None, keep=["ts"])
