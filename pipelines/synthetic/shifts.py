"""A day-partitioned warehouse export whose tastes jump and cycle (``synthetic.kind: shifts``).

Shaped the way a warehouse writes impressions, unlike ``days.py``: Hive partitions
``<data.root>/raw/dt=2026-11-01/part-00000.parquet`` (``synthetic.shifts.partition_key``,
``parts_per_day`` part files and an empty ``_SUCCESS`` each), rows in no order, timestamps in
a time zone, ids as hex strings and SKUs, extra columns no model uses, booleans as labels.
Knobs: ``synthetic.shifts`` (``recmtl/config/shifts.py``); sizes from ``synthetic``.

The latent model (``Catalogue``, fixed over the window; what moves is below):

    p_click = sigmoid(-2.5 + 1.2 <t_u, v_i> + appeal_i - 0.12 placement + platform effect
                      + shift_c(day))
    p_purchase_given_click = sigmoid(-1.8 + 0.6 appeal_i + 0.6 <t_u, v_i>
                                     - 0.8 s_u (log price_i - mean log price) + 2 discount
                                     + weekly_amplitude * loading_c
                                       * cos(2 pi (weekday - peak_weekday) / 7))
    purchased = clicked and Bernoulli(p_purchase_given_click)

``t_u`` a user's taste (K Gaussians / sqrt(K)), ``v_i`` its category's vector plus 0.6 of
the item's own, ``appeal_i`` ~ N(0, 0.5), ``s_u`` a user's price sensitivity (lognormal),
``discount`` the row's (null counts as 0), ``loading_c`` ~ 1 + N(0, 0.5), ``weekday`` the
local time in days since Monday 00:00 (continuous). Impressions: a user by activity
(lognormal), then with probability ``new_item_share`` an item born that day, else an older
one, either by ``item weight * category weight``. ``shift_c``: from ``shift_day`` on, the
rising categories gain ``shift_click`` of click logit and ``shift_popularity`` times their
draw weight, the falling ones lose as much (``shifted_categories`` names them).

Columns of each part: ``impression_uuid`` (UUID-4 text), ``event_ts`` timestamp[ms, zone],
``visitor_id`` (16 hex digits), ``sku`` (``SKU-042-7F3A9C1B``: category, 8 hex digits),
``category`` (``cat-042``, dictionary-encoded), ``platform`` (ios/android/web), ``placement``
int32 0..7, ``price_usd`` double, ``discount_pct`` float32 (nullable), ``user_tenure_days``
int32, ``item_rating`` float32, ``item_created_date`` date32 (the item's birth day, local),
``app_version`` string, ``experiment_bucket`` int16, ``ingested_at`` timestamp[ms, UTC],
``clicked``, ``purchased`` bool, ``p_click``, ``p_purchase_given_click`` double (the true
probabilities). Deterministic by seed.

    recmtl generate configs/daily/shifts.yaml   # -> data/shifts/raw/dt=.../part-*.parquet
"""

from __future__ import annotations

import datetime as dt
import shutil
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recmtl.config import Config, SyntheticConfig
from recmtl.config.shifts import ShiftsConfig

PLATFORMS = ("ios", "android", "web")
PLATFORM_EFFECT = np.array([0.1, 0.0, -0.2])
NUM_PLACEMENTS = 8
APP_VERSIONS = ("7.12.0", "7.12.3", "7.13.0", "8.0.1")
DISCOUNTS = np.array([0.1, 0.2, 0.3, 0.5])
_HOURS = np.arange(24)
# Impressions by local hour: a lunchtime bump and an evening peak.
HOURLY = (0.3 + 0.6 * np.exp(-0.5 * ((_HOURS - 12.5) / 1.5) ** 2)
          + np.exp(-0.5 * ((_HOURS - 20.5) / 2.5) ** 2))
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", np.uint8)
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class Catalogue:
    """Every user and item of the window (items born later included), and the shift."""

    user_taste: np.ndarray  # [U, K]
    user_draw_p: np.ndarray  # [U]
    user_price_sensitivity: np.ndarray  # [U]
    user_platform: np.ndarray  # [U] index into PLATFORMS
    user_tenure: np.ndarray  # [U] days on the first day
    category_vec: np.ndarray  # [C, K]
    category_weight: np.ndarray  # [C] base draw weight
    category_loading: np.ndarray  # [C] of the weekly conversion cycle
    item_birth: np.ndarray  # [I] the day each item is born (< 0: the catalogue)
    item_category: np.ndarray  # [I]
    item_vec: np.ndarray  # [I, K]
    item_appeal: np.ndarray  # [I]
    item_weight: np.ndarray  # [I] draw weight within the day's pool
    item_log_price: np.ndarray  # [I]
    rising: np.ndarray  # category indices that rise on the shift day
    falling: np.ndarray  # ... and that fall


def catalogue(syn: SyntheticConfig, seed: int) -> Catalogue:
    """The latent state of ``syn``'s window, deterministic by ``seed``."""
    sh, k = syn.shifts, syn.latent_dim
    rng = np.random.default_rng([seed, 31])
    num_items = syn.num_items + syn.days * sh.new_items_per_day
    activity = rng.lognormal(0.0, 1.2, size=syn.num_users)
    category_vec = rng.normal(size=(syn.num_categories, k))
    category_weight = rng.lognormal(0.0, 0.8, size=syn.num_categories)
    # The catalogue was born over the year before day 0.
    item_birth = np.concatenate([-rng.integers(1, 366, size=syn.num_items),
                                 np.repeat(np.arange(syn.days), sh.new_items_per_day)])
    item_category = rng.choice(syn.num_categories, size=num_items,
                               p=category_weight / category_weight.sum())
    price_level = rng.normal(3.0, 0.7, size=syn.num_categories)
    shifted = rng.permutation(syn.num_categories)[:sh.shift_categories]
    half = (sh.shift_categories + 1) // 2
    return Catalogue(
        user_taste=rng.normal(size=(syn.num_users, k)) / np.sqrt(k),
        user_draw_p=activity / activity.sum(),
        user_price_sensitivity=rng.lognormal(0.0, 0.3, size=syn.num_users),
        user_platform=rng.choice(len(PLATFORMS), size=syn.num_users, p=[0.45, 0.4, 0.15]),
        user_tenure=rng.exponential(300.0, size=syn.num_users).astype(np.int64),
        category_vec=category_vec,
        category_weight=category_weight,
        category_loading=1.0 + 0.5 * rng.normal(size=syn.num_categories),
        item_birth=item_birth,
        item_category=item_category,
        item_vec=category_vec[item_category] + 0.6 * rng.normal(size=(num_items, k)),
        item_appeal=0.5 * rng.normal(size=num_items),
        item_weight=rng.lognormal(0.0, 1.0, size=num_items),
        item_log_price=price_level[item_category] + 0.4 * rng.normal(size=num_items),
        rising=np.sort(shifted[:half]), falling=np.sort(shifted[half:]))


def shifted_categories(syn: SyntheticConfig, seed: int) -> tuple[list[str], list[str]]:
    """(rising, falling) category names of the shift."""
    cat = catalogue(syn, seed)
    return [category_name(c) for c in cat.rising], [category_name(c) for c in cat.falling]


def category_name(index: int) -> str:
    return f"cat-{index:03d}"


def shift_sign(cat: Catalogue, sh: ShiftsConfig, day: int) -> np.ndarray:
    """[C] +1 for a rising category, -1 for a falling one, from ``shift_day`` on; else 0."""
    sign = np.zeros(len(cat.category_weight))
    if day >= sh.shift_day:
        sign[cat.rising], sign[cat.falling] = 1.0, -1.0
    return sign


def weekly_cycle(sh: ShiftsConfig, weekday: np.ndarray) -> np.ndarray:
    """cos(2 pi (weekday - peak_weekday) / 7): 1 at the peak, -1 half a week from it."""
    return np.cos(2 * np.pi * (weekday - sh.peak_weekday) / 7)


def day_bounds(sh: ShiftsConfig, day: int) -> tuple[dt.date, int, int]:
    """(local date, first and end epoch milliseconds) of ``day``: local midnight to midnight."""
    date = dt.date.fromisoformat(sh.start_date) + dt.timedelta(days=day)
    zone = zoneinfo.ZoneInfo(sh.time_zone)
    start, end = (dt.datetime.combine(x, dt.time(), zone) for x in (date, date + dt.timedelta(1)))
    return date, round(start.timestamp() * 1000), round(end.timestamp() * 1000)


def partition_dir(root: str | Path, sh: ShiftsConfig, day: int) -> Path:
    return Path(root) / "raw" / f"{sh.partition_key}={day_bounds(sh, day)[0].isoformat()}"


def sample_day(cat: Catalogue, syn: SyntheticConfig, day: int, rng: np.random.Generator,
               first_row: int) -> pa.Table:
    """``syn.rows_per_day`` impressions of ``day`` in draw order (not by time)."""
    sh, n = syn.shifts, syn.rows_per_day
    users = rng.choice(len(cat.user_draw_p), size=n, p=cat.user_draw_p)
    sign = shift_sign(cat, sh, day)
    weight = cat.item_weight * (sh.shift_popularity ** sign)[cat.item_category]
    new = rng.random(n) < sh.new_item_share
    items = np.empty(n, np.int64)
    for mask, pool in ((new, np.flatnonzero(cat.item_birth == day)),
                       (~new, np.flatnonzero(cat.item_birth < day))):
        items[mask] = rng.choice(pool, size=int(mask.sum()), p=weight[pool] / weight[pool].sum())
    category = cat.item_category[items]
    platform = np.where(rng.random(n) < 0.85, cat.user_platform[users],
                        rng.integers(len(PLATFORMS), size=n))
    placement = rng.integers(NUM_PLACEMENTS, size=n)
    discount = np.where(rng.random(n) < 0.3, rng.choice(DISCOUNTS, size=n), 0.0)
    discount_null = rng.random(n) < sh.null_share
    date, start_ms, end_ms = day_bounds(sh, day)
    hour = rng.choice(24, size=n, p=HOURLY / HOURLY.sum())
    # Elapsed share of the local day, so a 23- or 25-hour day keeps the daily shape.
    event_ms = start_ms + ((hour + rng.random(n)) / 24 * (end_ms - start_ms)).astype(np.int64)
    weekday = date.weekday() + (event_ms - start_ms) / (end_ms - start_ms)

    match = np.einsum("nk,nk->n", cat.user_taste[users], cat.item_vec[items])
    appeal = cat.item_appeal[items]
    click_logit = (-2.5 + 1.2 * match + appeal - 0.12 * placement + PLATFORM_EFFECT[platform]
                   + sh.shift_click * sign[category])
    mean_log_price = float(cat.item_log_price.mean())
    conv_logit = (-1.8 + 0.6 * appeal + 0.6 * match
                  - 0.8 * cat.user_price_sensitivity[users]
                  * (cat.item_log_price[items] - mean_log_price)
                  + 2.0 * np.where(discount_null, 0.0, discount)
                  + sh.weekly_amplitude * cat.category_loading[category]
                  * weekly_cycle(sh, weekday))
    p_click, p_conv = _sigmoid(click_logit), _sigmoid(conv_logit)
    clicked = rng.random(n) < p_click
    purchased = clicked & (rng.random(n) < p_conv)

    zone = sh.time_zone
    created = (date - dt.date(1970, 1, 1)).days + cat.item_birth[items] - day
    row = np.arange(first_row, first_row + n, dtype=np.uint64)
    visitor = _splitmix(users.astype(np.uint64) + np.uint64(0x5EED))
    categories = pa.array([category_name(c) for c in range(len(cat.category_weight))])
    return pa.table({
        "impression_uuid": _uuid(_splitmix(row), rng.integers(0, 2**63, size=n).astype(np.uint64)),
        "event_ts": pa.array(event_ms, pa.timestamp("ms", tz=zone)),
        "visitor_id": _text(_hex_digits(visitor, 16)),
        "sku": _skus(items, category),
        "category": pa.DictionaryArray.from_arrays(pa.array(category.astype(np.int32)),
                                                   categories),
        "platform": pa.array(np.array(PLATFORMS)[platform]),
        "placement": pa.array(placement.astype(np.int32)),
        "price_usd": pa.array(np.floor(np.exp(cat.item_log_price[items])) + 0.99),
        "discount_pct": pa.array((100 * discount).astype(np.float32), mask=discount_null),
        "user_tenure_days": pa.array((cat.user_tenure[users] + day).astype(np.int32)),
        "item_rating": pa.array(np.round(np.clip(3.8 + 0.8 * appeal, 1.0, 5.0), 1)
                                .astype(np.float32)),
        "item_created_date": pa.array(created.astype(np.int32), pa.date32()),
        "app_version": pa.array(np.array(APP_VERSIONS)[rng.integers(len(APP_VERSIONS), size=n)]),
        "experiment_bucket": pa.array((visitor % np.uint64(100)).astype(np.int16)),
        "ingested_at": pa.array(event_ms + rng.integers(60_000, 1_800_000, size=n),
                                pa.timestamp("ms", tz="UTC")),
        "clicked": pa.array(clicked),
        "purchased": pa.array(purchased),
        "p_click": pa.array(p_click),
        "p_purchase_given_click": pa.array(p_conv),
    })


def generate_shifts(cfg: Config, root: str | Path | None = None) -> dict[str, int]:
    """Writes ``root/raw/<key>=<date>/part-NNNNN.parquet`` + ``_SUCCESS`` for each of
    ``synthetic.days`` days (earlier partitions of the key are removed first); returns the
    rows written per partition."""
    syn = cfg.synthetic
    sh = syn.shifts
    root = Path(root or cfg.data.root)
    (root / "raw").mkdir(parents=True, exist_ok=True)
    for old in (root / "raw").glob(f"{sh.partition_key}=*"):
        shutil.rmtree(old)
    cat = catalogue(syn, cfg.seed)
    counts = {}
    for day in range(syn.days):
        table = sample_day(cat, syn, day, np.random.default_rng([cfg.seed, 32, day]),
                           day * syn.rows_per_day)
        out = partition_dir(root, sh, day)
        out.mkdir()
        bounds = np.linspace(0, table.num_rows, sh.parts_per_day + 1).round().astype(int)
        for part in range(sh.parts_per_day):
            pq.write_table(table.slice(bounds[part], bounds[part + 1] - bounds[part]),
                           out / f"part-{part:05d}.parquet", row_group_size=syn.row_group_size)
        (out / "_SUCCESS").touch()
        counts[out.name] = table.num_rows
    return counts


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64, so distinct inputs give distinct ids."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hex_digits(values: np.ndarray, width: int, upper: bool = False) -> np.ndarray:
    """[N, width] uint8 ASCII: the low ``width`` hex digits of each uint64, most significant
    first."""
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    return (_HEX_UPPER if upper else _HEX)[(values.astype(np.uint64)[:, None] >> shifts)
                                           & np.uint64(15)]


def _ascii(text: str, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode(), np.uint8), (n, len(text)))


def _text(chars: np.ndarray) -> pa.Array:
    """[N, L] uint8 ASCII -> N strings of length L (built in numpy: no Python loop)."""
    chars = np.ascontiguousarray(chars)
    fixed = chars.view(f"S{chars.shape[1]}").ravel()
    return pa.array(fixed, pa.binary()).cast(pa.string())


def _uuid(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """UUID-4 text ``xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`` of two uint64 halves."""
    n = len(hi)
    h, low = _hex_digits(hi, 16), _hex_digits(lo, 16)
    variant = _HEX[8 + (lo >> np.uint64(62)).astype(np.int64)][:, None]
    dash = _ascii("-", n)
    return _text(np.hstack([h[:, :8], dash, h[:, 8:12], dash, _ascii("4", n), h[:, 13:16],
                            dash, variant, low[:, 1:4], dash, low[:, 4:16]]))


def _skus(items: np.ndarray, category: np.ndarray) -> pa.Array:
    """``SKU-<category, 3 digits>-<8 upper-case hex digits>``; an odd multiplier mod 2^32
    followed by a xor-shift is a bijection, so distinct items get distinct codes."""
    code = (items.astype(np.uint64) * np.uint64(0x9E3779B1) + np.uint64(0x2545F491)) \
        & np.uint64(0xFFFFFFFF)
    code ^= code >> np.uint64(15)
    digits = (category[:, None] // np.array([100, 10, 1])) % 10 + ord("0")
    n = len(items)
    return _text(np.hstack([_ascii("SKU-", n), digits.astype(np.uint8), _ascii("-", n),
                            _hex_digits(code, 8, upper=True)]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
