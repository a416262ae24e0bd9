"""The shifting warehouse export (``synthetic.kind: shifts``): Hive layout, id shapes and
zone-aware times, the new-item share, the category shift and the weekly conversion cycle
against the true probabilities, labels against those probabilities, determinism, and
`recmtl prepare` on one day with configs/daily/shifts_prepare.yml."""

import datetime as dt
import re
import zoneinfo
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.cli import main as recmtl
from pipelines.synthetic.shifts import shifted_categories
from pipelines.synthetic.store import generate
from recmtl.config import ConfigError, derive, load_config

CONFIG = "configs/daily/shifts.yaml"
SPEC = "configs/daily/shifts_prepare.yml"
DAYS, ROWS, PARTS = 5, 20_000, 3
SMALL = [f"synthetic.days={DAYS}", f"synthetic.rows_per_day={ROWS}", "synthetic.num_users=5000",
         "synthetic.num_items=4000", "synthetic.num_categories=20",
         "synthetic.row_group_size=8192", "synthetic.shifts.new_items_per_day=500",
         f"synthetic.shifts.parts_per_day={PARTS}", "synthetic.shifts.shift_categories=4",
         "synthetic.shifts.shift_day=3"]
DATES = [f"2026-11-{d:02d}" for d in range(1, DAYS + 1)]
ZONE = "America/New_York"
TYPES = {
    "impression_uuid": pa.string(), "event_ts": pa.timestamp("ms", tz=ZONE),
    "visitor_id": pa.string(), "sku": pa.string(),
    "category": pa.dictionary(pa.int32(), pa.string()), "platform": pa.string(),
    "placement": pa.int32(), "price_usd": pa.float64(), "discount_pct": pa.float32(),
    "user_tenure_days": pa.int32(), "item_rating": pa.float32(),
    "item_created_date": pa.date32(), "app_version": pa.string(),
    "experiment_bucket": pa.int16(), "ingested_at": pa.timestamp("ms", tz="UTC"),
    "clicked": pa.bool_(), "purchased": pa.bool_(), "p_click": pa.float64(),
    "p_purchase_given_click": pa.float64(),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("shifts")
    cfg = load_config(CONFIG, [*SMALL, f"data.root={root}"])
    counts = generate(cfg)
    days = [ds.dataset(root / "raw" / f"dt={date}", format="parquet").to_table()
            for date in DATES]
    return cfg, root, counts, days


def _np(column):
    return column.to_numpy(zero_copy_only=False)


def _logit(p):
    return np.log(p / (1 - p))


def _local_midnight_ms(date: str) -> int:
    return int(dt.datetime.combine(dt.date.fromisoformat(date), dt.time(),
                                   zoneinfo.ZoneInfo(ZONE)).timestamp() * 1000)


def test_hive_layout_parts_and_success_markers(store):
    _, root, counts, days = store
    assert sorted(p.name for p in (root / "raw").iterdir()) == [f"dt={d}" for d in DATES]
    assert counts == {f"dt={d}": ROWS for d in DATES}
    for date, table in zip(DATES, days, strict=True):
        part_dir = root / "raw" / f"dt={date}"
        names = sorted(p.name for p in part_dir.iterdir())
        assert names == ["_SUCCESS", *(f"part-{i:05d}.parquet" for i in range(PARTS))]
        assert (part_dir / "_SUCCESS").stat().st_size == 0
        sizes = [pq.ParquetFile(part_dir / n).metadata.num_rows for n in names[1:]]
        assert sum(sizes) == ROWS and min(sizes) > 0
        assert dict(zip(table.schema.names, table.schema.types, strict=True)) == TYPES


def test_timestamps_are_zoned_unsorted_and_inside_their_local_day(store):
    _, root, _, days = store
    for i, (date, table) in enumerate(zip(DATES, days, strict=True)):
        ms = _np(table["event_ts"].cast(pa.int64()))
        start = _local_midnight_ms(date)
        end = _local_midnight_ms(DATES[i + 1]) if i + 1 < DAYS else start + 86_400_000
        assert (ms >= start).all() and (ms < end).all(), date
        part = pq.read_table(root / "raw" / f"dt={date}" / "part-00000.parquet")
        assert (np.diff(_np(part["event_ts"].cast(pa.int64()))) < 0).any()  # not time-sorted
        ingested = _np(table["ingested_at"].cast(pa.int64()))
        assert (ingested > ms).all()
    # The clocks go back on 2026-11-01 in New York: a 25-hour first day.
    assert _local_midnight_ms(DATES[1]) - _local_midnight_ms(DATES[0]) == 25 * 3_600_000


def test_id_shapes(store):
    _, _, _, days = store
    table = pa.concat_tables(days)
    shapes = {"visitor_id": r"^[0-9a-f]{16}$", "sku": r"^SKU-[0-9]{3}-[0-9A-F]{8}$",
              "impression_uuid": r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                                 r"-[0-9a-f]{12}$"}
    for column, shape in shapes.items():
        assert pc.all(pc.match_substring_regex(table[column], shape)).as_py(), column
    assert pc.count_distinct(table["impression_uuid"]).as_py() == table.num_rows
    sku_cat = pc.utf8_slice_codeunits(table["sku"], 4, 7)
    category = pc.utf8_slice_codeunits(table["category"].cast(pa.string()), 4, 7)
    assert pc.all(pc.equal(sku_cat, category)).as_py()
    # One SKU, one category; one visitor, one tenure a day.
    pairs = table.group_by("sku").aggregate([("category", "count_distinct")])
    assert pc.max(pairs["category_count_distinct"]).as_py() == 1


def test_about_30_percent_of_each_days_impressions_are_on_items_born_that_day(store):
    cfg, _, _, days = store
    share = cfg.synthetic.shifts.new_item_share
    seen: set[str] = set()
    for date, table in zip(DATES, days, strict=True):
        born_today = _np(pc.equal(table["item_created_date"],
                                  pa.scalar(dt.date.fromisoformat(date))))
        # The Bernoulli draw per row: within 4 standard deviations of the binomial.
        assert abs(born_today.mean() - share) < 4 * np.sqrt(share * (1 - share) / ROWS), date
        skus = np.asarray(table["sku"].to_pylist())
        assert not seen & set(skus[born_today])  # never shown before their birth day
        assert (_np(table["item_created_date"].cast(pa.int32()))
                <= (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days).all()
        seen |= set(skus)


def _categories(table) -> np.ndarray:
    """``cat-042`` -> 42, per row."""
    text = pc.utf8_slice_codeunits(table["category"].cast(pa.string()), 4)
    return _np(text.cast(pa.int64()))


def _per_category(table, values):
    cats = _categories(table)
    return {f"cat-{c:03d}": values[cats == c] for c in np.unique(cats)}


def test_the_shifted_categories_jump_on_the_shift_day_and_only_then(store):
    cfg, _, _, days = store
    sh = cfg.synthetic.shifts
    rising, falling = shifted_categories(cfg.synthetic, cfg.seed)
    assert len(rising) == len(falling) == 2

    def jump(before, after):
        """Per category: (change of mean click logit, its standard error, rows' shares)."""
        a = _per_category(before, _logit(_np(before["p_click"])))
        b = _per_category(after, _logit(_np(after["p_click"])))
        out = {}
        for c in set(a) & set(b):
            if len(a[c]) >= 100 and len(b[c]) >= 100:
                se = np.sqrt(a[c].var() / len(a[c]) + b[c].var() / len(b[c]))
                out[c] = (b[c].mean() - a[c].mean(), se, len(a[c]) / ROWS, len(b[c]) / ROWS)
        return out

    on = jump(days[sh.shift_day - 1], days[sh.shift_day])
    assert set(rising + falling) <= set(on)
    for c, (change, se, share_before, share_after) in on.items():
        expected = sh.shift_click * ((c in rising) - (c in falling))
        assert abs(change - expected) < 5 * se, (c, change, expected)
        if c in rising:
            assert share_after > 2 * share_before, c  # shift_popularity 3
        if c in falling:
            assert share_after < share_before / 2, c
    calm = jump(days[sh.shift_day - 2], days[sh.shift_day - 1])  # the day before: nothing
    assert len(calm) >= 10
    for c, (change, se, _, _) in calm.items():
        assert abs(change) < 5 * se, (c, change)
    # The labels see it too: the rising categories' click-through, before vs on the day.
    for before, after in ((days[sh.shift_day - 1], days[sh.shift_day]),):
        up = [int(c[4:]) for c in rising]
        ctr = [_np(t["clicked"])[np.isin(_categories(t), up)].mean() for t in (before, after)]
        assert ctr[1] > ctr[0] + 0.05, ctr


def test_conversion_cycles_with_the_weekday(store, tmp_path):
    cfg, _, _, days = store
    sh = cfg.synthetic.shifts

    def slope(tables):
        """Pooled within-category slope of logit p(purchase | click) on the weekly cosine,
        the weekday from each row's local time (Monday 00:00 = 0)."""
        xs, ys, cs = [], [], []
        for i, (date, t) in enumerate(zip(DATES, tables, strict=True)):
            start = _local_midnight_ms(date)
            end = _local_midnight_ms(DATES[i + 1]) if i + 1 < DAYS else start + 86_400_000
            elapsed = (_np(t["event_ts"].cast(pa.int64())) - start) / (end - start)
            weekday = dt.date.fromisoformat(date).weekday() + elapsed
            xs.append(np.cos(2 * np.pi * (weekday - sh.peak_weekday) / 7))
            ys.append(_logit(_np(t["p_purchase_given_click"])))
            cs.append(_categories(t))
        x, y, c = (np.concatenate(v) for v in (xs, ys, cs))
        num = den = 0.0
        for cat in np.unique(c):
            m = c == cat
            dx, dy = x[m] - x[m].mean(), y[m] - y[m].mean()
            num, den = num + dx @ dy, den + dx @ dx
        return num / den

    # The loadings are 1 + N(0, 0.5) over 20 categories: their mean is near 1.
    assert 0.6 * sh.weekly_amplitude < slope(days) < 1.4 * sh.weekly_amplitude
    flat = derive(cfg, {"synthetic.shifts.weekly_amplitude": 0.0, "synthetic.days": DAYS,
                        "data.root": str(tmp_path)})
    generate(flat)
    flat_days = [ds.dataset(tmp_path / "raw" / f"dt={d}", format="parquet").to_table()
                 for d in DATES]
    assert abs(slope(flat_days)) < 0.1 * sh.weekly_amplitude


def test_purchases_only_on_clicks_and_labels_follow_the_true_probabilities(store):
    _, _, _, days = store
    for date, t in zip(DATES, days, strict=True):
        clicked, purchased = _np(t["clicked"]), _np(t["purchased"])
        p_click, p_conv = _np(t["p_click"]), _np(t["p_purchase_given_click"])
        assert not (purchased & ~clicked).any(), date
        assert 0 < purchased.sum() < clicked.sum() < len(clicked)
        for label, p in ((clicked, p_click), (purchased[clicked], p_conv[clicked])):
            bound = 4 * np.sqrt((p * (1 - p)).sum()) / len(p)
            assert abs(label.mean() - p.mean()) < bound, (date, label.mean(), p.mean())
        # The oracles rank: CTR, CVR on clicked rows, CTCVR on all rows.
        assert roc_auc_score(clicked, p_click) > 0.75
        assert roc_auc_score(purchased[clicked], p_conv[clicked]) > 0.65
        assert roc_auc_score(purchased, p_click * p_conv) > 0.8


def test_deterministic_by_seed(store, tmp_path):
    cfg, root, _, _ = store
    part = Path("raw") / f"dt={DATES[2]}" / "part-00001.parquet"
    generate(derive(cfg, {"data.root": str(tmp_path / "again")}))
    assert pq.read_table(tmp_path / "again" / part).equals(pq.read_table(root / part))
    generate(derive(cfg, {"seed": 1, "data.root": str(tmp_path / "other")}))
    assert not pq.read_table(tmp_path / "other" / part).equals(pq.read_table(root / part))


@pytest.mark.parametrize("key,value", [
    ("synthetic.shifts.time_zone", "Mars/Olympus"),
    ("synthetic.shifts.start_date", "Nov 1"),
    ("synthetic.shifts.shift_categories", 21),
    ("synthetic.shifts.new_item_share", 1.0),
    ("synthetic.shifts.partition_key", "d t"),
])
def test_bad_knobs_name_their_key(key, value):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(CONFIG, [*SMALL, f"{key}={value}"])


def _one_file(partition: Path, out: Path) -> None:
    """The day's part files as one Parquet file (today's prepare reads a file per day)."""
    parts = sorted(partition.glob("part-*.parquet"))
    pq.write_table(pa.concat_tables(pq.read_table(p) for p in parts), out)


def test_prepare_one_day_with_the_shifts_schema(store, tmp_path):
    _, root, _, days = store
    source = tmp_path / "export"
    source.mkdir()
    for date in DATES[:2]:  # day 0 trains (valid from 21:00 local), day 1 is the test
        _one_file(root / "raw" / f"dt={date}", source / f"{date}.parquet")
    out = tmp_path / "prepared"
    assert recmtl(["prepare", SPEC, "--source", str(source), "--output", str(out)]) == 0
    prepared = {s: ds.dataset(out / s, format="parquet").to_table()
                for s in ("train", "valid", "test")}
    local = pc.local_timestamp(days[0]["event_ts"])
    evening = _np(pc.greater_equal(pc.hour(local), 21))
    assert {s: t.num_rows for s, t in prepared.items()} == {
        "train": int((~evening).sum()), "valid": int(evening.sum()), "test": ROWS}
    # SKUs the train split never saw (the items born on day 1, at least) map to the OOV id.
    train_skus = set(np.asarray(days[0]["sku"].to_pylist())[~evening])
    unseen = sum(s not in train_skus for s in days[1]["sku"].to_pylist())
    assert unseen > 0.3 * ROWS
    assert int((_np(prepared["test"]["item_id"]) == 0).sum()) == unseen
    cfg = load_config(out / "shifts.yaml")
    assert cfg.task("ctr").oracle == "p_click"
    assert [t.label for t in cfg.tasks] == ["clicked", "purchased", "purchased"]
    assert set(prepared["test"].column_names) >= {"p_click", "p_purchase_given_click",
                                                  "clicked", "purchased", "discount"}
