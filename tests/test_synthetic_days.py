"""The daily raw export (``synthetic.days > 0``): layout, types, churn and drift against what the
knobs imply, and `recmtl prepare` on it with configs/daily/prepare.yml."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.synthetic.days import POPULARITY_SIGMA, day_path, days, known_on, score
from pipelines.synthetic.store import generate
from recmtl.config import ConfigError, derive, load_config

RECMTL = str(Path(sys.executable).parent / "recmtl")
DAILY = "configs/daily/daily.yaml"
SPEC = "configs/daily/prepare.yml"
# 1,000 new items a day keep the churn share's own spread (lognormal base popularity) small.
SMALL = ["synthetic.days=5", "synthetic.rows_per_day=100000", "synthetic.num_users=10000",
         "synthetic.num_items=20000", "synthetic.row_group_size=16384"]
COLUMNS = {
    "impression_id": pa.int64(), "event_time": pa.timestamp("us"), "user_id": pa.string(),
    "item_id": pa.string(), "item_category": pa.string(),
    "recent_categories": pa.list_(pa.string()), "user_segment": pa.int64(),
    "hour": pa.int64(), "device": pa.int64(), "slot": pa.int64(), "price": pa.float32(),
    "item_quality_hist": pa.float32(), "user_activity": pa.float32(),
    "context_score": pa.float32(), "click": pa.int8(), "conversion": pa.int8(),
    "p_click": pa.float64(), "p_conversion_given_click": pa.float64(),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("daily")
    cfg = load_config(DAILY, [*SMALL, f"data.root={root}"])
    counts = generate(cfg)
    tables = [pq.read_table(day_path(root, d)) for d in range(cfg.synthetic.days)]
    return cfg, root, counts, tables


def _ids(table, column):
    return set(table[column].to_pylist())


def test_deterministic_by_seed(store, tmp_path):
    cfg, _, _, tables = store
    again = derive(cfg, {"data.root": str(tmp_path / "again")})
    generate(again)
    assert pq.read_table(day_path(tmp_path / "again", 3)).equals(tables[3])
    other = derive(again, {"seed": 1, "data.root": str(tmp_path / "other")})
    generate(other)
    assert not pq.read_table(day_path(tmp_path / "other", 3)).equals(tables[3])


def test_each_day_has_the_columns_types_and_times(store):
    cfg, root, counts, tables = store
    syn = cfg.synthetic
    assert counts == {f"day-{d:04d}": syn.rows_per_day for d in range(syn.days)}
    assert sorted(p.name for p in (root / "raw").iterdir()) == [f"day-{d:04d}.parquet"
                                                                 for d in range(syn.days)]
    impression_ids = []
    for d, t in enumerate(tables):
        assert dict(zip(t.schema.names, t.schema.types, strict=True)) == COLUMNS
        meta = pq.ParquetFile(day_path(root, d)).metadata
        assert meta.num_row_groups == -(-syn.rows_per_day // syn.row_group_size)
        micros = t["event_time"].cast(pa.int64()).to_numpy()
        start = (np.datetime64("2026-01-01") + np.timedelta64(d, "D")).astype("datetime64[us]")
        offset = micros - start.astype(np.int64)
        assert (offset >= 0).all() and (offset < 86_400_000_000).all()
        assert (np.diff(micros) >= 0).all()  # written in time order
        assert (offset // 3_600_000_000 == t["hour"].to_numpy()).all()
        for column, prefix in (("user_id", "u"), ("item_id", "i"), ("item_category", "c")):
            assert pc.all(pc.match_substring_regex(t[column], f"^{prefix}[0-9]+$")).as_py()
        assert t["user_segment"].to_numpy().max() < syn.num_segments
        impression_ids.append(t["impression_id"].to_numpy())
    ids = np.concatenate(impression_ids)
    assert len(np.unique(ids)) == len(ids)


def test_labels_follow_the_oracle_and_convert_only_on_clicks(store):
    _, _, _, tables = store
    for t in tables:
        click, conv = t["click"].to_numpy(), t["conversion"].to_numpy()
        p_click, p_conv = t["p_click"].to_numpy(), t["p_conversion_given_click"].to_numpy()
        assert (conv <= click).all()
        n = len(click)
        # Binomial: 5 standard deviations of the mean label around the mean probability.
        assert abs(click.mean() - p_click.mean()) < 5 * np.sqrt(p_click.mean() / n)
        on_click = click == 1
        m = on_click.sum()
        assert abs(conv[on_click].mean() - p_conv[on_click].mean()) < 5 * np.sqrt(0.25 / m)


def _expected_new_share(syn, day: int) -> tuple[float, float]:
    """Share of day ``day``'s impressions on items born that day, and its standard deviation,
    from the knobs: every item's expected weight is 0.5 ** (age / half-life) (base popularity
    and walk have mean one); the initial catalogue arrived at the same rate over 1 / rate days.
    The spread: the lognormal base weights of the day's new items, the old items' weights
    (base x walk, walk variance growing with the days it walked) and the binomial draw."""
    n_new = round(syn.new_items_per_day * syn.num_items)
    span = max(1, round(1 / syn.new_items_per_day))
    r = 0.5 ** (1 / syn.item_half_life_days)
    ages = np.arange(day, day + span)  # initial items, N / span per past day
    old_mass = syn.num_items / span * (r**ages).sum()
    later = day - np.arange(1, day)  # ages of the items born on days 1 .. day - 1
    old_mass += n_new * (r**later).sum()
    share = n_new / (n_new + old_mass)
    base_var = np.exp(POPULARITY_SIGMA**2) - 1
    walk = syn.popularity_drift**2

    def var(age, steps):
        return r ** (2 * age) * (np.exp(POPULARITY_SIGMA**2 + walk * steps) - 1)

    old_var = (syn.num_items / span * var(ages, day).sum()
               + n_new * var(later, later).sum())
    rel = (1 - share) ** 2 * (base_var / n_new + old_var / old_mass**2)
    sd = np.sqrt(share**2 * rel + share * (1 - share) / syn.rows_per_day)
    return share, sd


def test_catalogue_churn_matches_the_knobs(store):
    cfg, _, _, tables = store
    syn = cfg.synthetic
    n_new = round(syn.new_items_per_day * syn.num_items)
    seen = _ids(tables[0], "item_id")
    shares, excess = [], []
    for d in range(1, syn.days):
        items = tables[d]["item_id"].to_pylist()
        index = np.array([int(i[1:]) for i in items])
        born_today = (index >= syn.num_items + (d - 1) * n_new) & (index < syn.num_items + d * n_new)
        unseen = np.array([i not in seen for i in items])
        assert not (born_today & ~unseen).any()  # fresh ids: never drawn before their day
        assert index.max() < syn.num_items + d * n_new  # nobody from the future
        expected, sd = _expected_new_share(syn, d)
        got = born_today.mean()
        shares.append((got, expected, sd))
        assert abs(got - expected) < 4 * sd, (d, got, expected, sd)
        excess.append(unseen.mean() - got)  # born earlier, never drawn until today
        seen |= set(items)
    # That tail shrinks as the history grows (here ~3% after one day, <1% after four): the
    # share of never-seen items is the churn.
    assert all(0 <= e <= excess[0] < 0.05 for e in excess), excess
    assert excess[-1] < 0.01, excess
    got, expected = (np.mean([s[i] for s in shares]) for i in (0, 1))
    sd = np.sqrt(sum(s[2] ** 2 for s in shares)) / len(shares)
    assert abs(got - expected) < 4 * sd
    # Users join too: fresh user ids on later days.
    users = [int(u[1:]) for u in tables[-1]["user_id"].to_pylist()]
    assert max(users) >= syn.num_users


def test_drift_makes_a_model_that_stands_still_lose(store):
    cfg, _, _, tables = store
    states = list(days(cfg.synthetic, cfg.seed))
    for state, t in zip(states, tables, strict=True):  # the oracle columns come back exactly
        p_click, p_conv = score(state.world, t)
        np.testing.assert_allclose(p_click, t["p_click"].to_numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(p_conv, t["p_conversion_given_click"].to_numpy(), rtol=0,
                                   atol=1e-12)
    frozen = known_on(states[1])
    same_day, _ = score(frozen, tables[1])  # on its own day, frozen = true
    np.testing.assert_allclose(same_day, tables[1]["p_click"].to_numpy(), rtol=0, atol=1e-12)
    gaps = []
    for k in range(1, len(tables) - 1):
        t = tables[1 + k]
        click = t["click"].to_numpy()
        stale, _ = score(frozen, t)
        true_auc = roc_auc_score(click, t["p_click"].to_numpy())
        stale_auc = roc_auc_score(click, stale)
        gaps.append(true_auc - stale_auc)
    # 0.014, 0.025, 0.037 here; the paired difference's noise at 100k rows is ~0.002.
    assert gaps[0] > 0.008, gaps
    assert all(b > a for a, b in zip(gaps, gaps[1:], strict=False)), gaps


def test_drift_is_checked():
    with pytest.raises(ConfigError, match=r"synthetic\.drift"):
        load_config(DAILY, ["synthetic.drift=1.5"])
    with pytest.raises(ConfigError, match=r"synthetic\.item_half_life_days"):
        load_config(DAILY, ["synthetic.item_half_life_days=0"])


def test_generate_command_writes_one_file_per_day(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "day-0007.parquet").write_text("stale")  # a longer earlier run
    done = subprocess.run(
        [RECMTL, "generate", DAILY, f"data.root={tmp_path}", "synthetic.days=2",
         "synthetic.rows_per_day=3000", "synthetic.num_users=500", "synthetic.num_items=400",
         "synthetic.row_group_size=1000"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r"wrote 6,000 rows to .*raw in .*day-0000=3,000, day-0001=3,000",
                     done.stdout), done.stdout
    files = sorted(p.name for p in (tmp_path / "raw").iterdir())
    assert files == ["day-0000.parquet", "day-0001.parquet"]
    assert pq.ParquetFile(tmp_path / "raw" / files[1]).metadata.num_row_groups == 3


def test_prepare_one_day_with_the_daily_schema(store, tmp_path):
    _, root, _, tables = store
    source = tmp_path / "export"
    source.mkdir()
    for d in (0, 1):  # day 0 trains (valid from 21:00), day 1 is the test
        (source / f"day-{d:04d}.parquet").symlink_to(day_path(root, d))
    out = tmp_path / "prepared"
    done = subprocess.run([RECMTL, "prepare", SPEC, "--source", str(source), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    hour0 = tables[0]["hour"].to_numpy()
    expected = {"train": int((hour0 < 21).sum()), "valid": int((hour0 >= 21).sum()),
                "test": tables[1].num_rows}
    stats = json.loads((out / "stats.json").read_text())
    prepared = {s: ds.dataset(str(out / s)).to_table() for s in expected}
    assert {s: t.num_rows for s, t in prepared.items()} == expected
    assert {s: stats["splits"][s]["rows"] for s in expected} == expected
    sizes = {name: t["size"] for name, t in stats["tables"].items()}
    sparse = {"user_id": "user_id", "item_id": "item_id", "item_category": "item_category",
              "recent_categories": "item_category", "user_segment": "user_segment",
              "hour": "hour", "device": "device", "slot": "slot"}
    for split, t in prepared.items():
        for column, table in sparse.items():
            values = t[column].combine_chunks()
            if column == "recent_categories":
                values = values.flatten()
            v = values.to_numpy()
            assert v.min() >= 0 and v.max() < sizes[table], (split, column)
    # Items of day 1 that day 0's train split never saw map to the OOV id 0.
    train_items = set(pc.filter(tables[0]["item_id"], pc.less(tables[0]["hour"], 21)).to_pylist())
    unseen = sum(i not in train_items for i in tables[1]["item_id"].to_pylist())
    assert unseen > 0.15 * tables[1].num_rows
    assert int((prepared["test"]["item_id"].to_numpy() == 0).sum()) == unseen
    cfg = load_config(out / "daily.yaml")  # the training config prepare wrote
    assert {t.name: t.num_embeddings for t in cfg.features.tables} == sizes
    assert cfg.task("ctr").oracle == "p_click" and "p_click" in prepared["test"].column_names
