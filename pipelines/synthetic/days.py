"""A synthetic raw feature-store export, one Parquet file per day, where standing still costs.

The funnel of ``synthetic.py`` (latent user and item vectors, click and conversion logits,
recent categories) over a catalogue and tastes that move from day to day
(``SyntheticConfig``: ``days``, ``rows_per_day``, ``new_items_per_day``,
``item_half_life_days``, ``new_users_per_day``, ``drift``, ``popularity_drift``):

- **Churn.** Items are born every day with fresh ids (``i<index>``, indices counting up in
  order of birth) and fade: an item's draw weight is
  ``base * walk * 0.5 ** (age / item_half_life_days)``, base popularity lognormal
  (``POPULARITY_SIGMA``, mean one). The initial catalogue was born over the
  ``1 / new_items_per_day`` days before day 0 at the same rate. Users join too (``u<index>``),
  drawn by activity like the others from their first day.
- **Drift.** Every day the segment centres, each user's own part of the latent vector and the
  item qualities take an AR(1) step that renews ``drift`` of their variance (their spread stays
  the same); each item's log draw weight takes a mean-one random-walk step of
  ``popularity_drift``. Segment tastes (the recent categories) follow the centres.

``days()`` yields each day's ``Day`` (its ``World``, over every user and item ever born, with
draw probability 0 for the not yet born), so a test can score one day's impressions with
another day's world (``score``), or with what a model frozen on a day could know
(``known_on``: the unborn get their segment or category centre and mean quality).

Columns of ``raw/day-NNNN.parquet`` (rows sorted by ``event_time``, row groups of
``row_group_size``): ``impression_id`` int64 (unique across days), ``event_time``
timestamp[us] inside day d counted from ``START`` (its hour is ``hour``), ``user_id``,
``item_id``, ``item_category`` (``c<index>``) strings, ``recent_categories`` list<string>,
``user_segment``, ``hour``, ``device``, ``slot`` int64, ``price``, ``item_quality_hist``,
``user_activity``, ``context_score`` float32, ``click``, ``conversion`` int8 (a conversion
only on a click), ``p_click``, ``p_conversion_given_click`` float64: the true probabilities,
computed from the row's own (float32) context score, so ``score(day.world, table)`` gives
them back exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.synthetic.funnel import (
    NUM_DEVICES,
    NUM_HOURS,
    NUM_SLOTS,
    World,
    funnel_logits,
    make_world_and_centres,
    recent_categories,
)
from recmtl.config import Config, SyntheticConfig

START = dt.datetime(2026, 1, 1)
POPULARITY_SIGMA = 1.0  # log-sd of an item's base popularity
_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 24 * _US_PER_HOUR


@dataclass(frozen=True)
class Day:
    """The latent state of one day. ``world`` spans every user and item of all days."""

    day: int
    world: World
    segment_centre: np.ndarray  # [S, K] (user vectors are (centre + own part) / sqrt(K))
    category_centre: np.ndarray  # [C, K]
    user_birth: np.ndarray  # [U] the day each user joins
    item_birth: np.ndarray  # [I] the day each item is born (<= 0: the initial catalogue)


def births(initial: int, per_day_fraction: float, num_days: int) -> tuple[np.ndarray, int]:
    """(birth day of every index, the number born each day from day 1): the ``initial`` ones
    first, then ``round(per_day_fraction * initial)`` a day for days 1 .. num_days - 1."""
    per_day = round(per_day_fraction * initial)
    later = np.repeat(np.arange(1, max(num_days, 1)), per_day)
    return np.concatenate([np.zeros(initial, np.int64), later]), per_day


def days(syn: SyntheticConfig, seed: int) -> Iterator[Day]:
    """The state of days 0 .. ``syn.days - 1``, deterministic by ``seed``."""
    user_birth, _ = births(syn.num_users, syn.new_users_per_day, syn.days)
    item_birth, _ = births(syn.num_items, syn.new_items_per_day, syn.days)
    if syn.new_items_per_day > 0:  # the initial catalogue arrived at the same rate before
        span = max(1, round(1 / syn.new_items_per_day))
        rng = np.random.default_rng([seed, 10])
        item_birth[:syn.num_items] = -rng.integers(span, size=syn.num_items)
    pool = dataclasses.replace(syn, num_users=len(user_birth), num_items=len(item_birth))
    base, seg_c, cat_c = make_world_and_centres(pool, seed)
    k = syn.latent_dim
    own = base.user_vec * np.sqrt(k) - seg_c[base.user_segment]  # [U, K] the user's own part
    quality = base.item_quality
    rng = np.random.default_rng([seed, 11])
    log_base = POPULARITY_SIGMA * rng.normal(size=len(item_birth)) - POPULARITY_SIGMA**2 / 2
    log_walk = np.zeros(len(item_birth))
    keep, renew = np.sqrt(1 - syn.drift), np.sqrt(syn.drift)
    for d in range(syn.days):
        if d > 0:
            step = np.random.default_rng([seed, 12, d])
            seg_c = keep * seg_c + renew * step.normal(size=seg_c.shape)
            own = keep * own + renew * 0.15 * step.normal(size=own.shape)
            quality = keep * quality + renew * 0.6 * step.normal(size=quality.shape)
            sigma = syn.popularity_drift
            log_walk += (item_birth < d) * (sigma * step.normal(size=log_walk.shape)
                                            - sigma**2 / 2)
        age = d - item_birth
        item_w = np.where(age >= 0, np.exp(log_base + log_walk
                                           - np.log(2) * age / syn.item_half_life_days), 0.0)
        users_w = np.where(user_birth <= d, base.user_draw_p, 0.0)
        world = dataclasses.replace(
            base, user_vec=(seg_c[base.user_segment] + own) / np.sqrt(k),
            user_draw_p=users_w / users_w.sum(), item_quality=quality,
            item_draw_p=item_w / item_w.sum(),
            segment_top_categories=np.argsort(-(seg_c @ cat_c.T), axis=1)[:, :8])
        yield Day(d, world, seg_c, cat_c, user_birth, item_birth)


def known_on(day: Day) -> World:
    """What a model frozen at the end of ``day`` could know: that day's world, with users and
    items born later at their segment / category centre and items at mean quality (0)."""
    w = day.world
    new_user = (day.user_birth > day.day)[:, None]
    new_item = day.item_birth > day.day
    centre = day.segment_centre[w.user_segment] / np.sqrt(w.user_vec.shape[1])
    return dataclasses.replace(
        w, user_vec=np.where(new_user, centre, w.user_vec),
        item_vec=np.where(new_item[:, None], day.category_centre[w.item_category], w.item_vec),
        item_quality=np.where(new_item, 0.0, w.item_quality))


def sample_day(day: Day, n: int, rng: np.random.Generator, first_id: int) -> pa.Table:
    """``n`` impressions of one day as the raw export's Arrow table (sorted by time)."""
    w = day.world
    users = rng.choice(len(w.user_draw_p), size=n, p=w.user_draw_p)
    items = rng.choice(len(w.item_draw_p), size=n, p=w.item_draw_p)
    hour = rng.integers(NUM_HOURS, size=n)
    device = rng.integers(NUM_DEVICES, size=n)
    slot = rng.integers(NUM_SLOTS, size=n)
    category = w.item_category[items]
    lengths, recent, match = recent_categories(w, users, category, rng)
    context = rng.normal(size=n).astype(np.float32)
    click_logit, conv_logit = funnel_logits(w, users, items, hour, device, slot, match,
                                            context.astype(np.float64))
    p_click, p_conv = _sigmoid(click_logit), _sigmoid(conv_logit)
    click = rng.random(n) < p_click
    conversion = click & (rng.random(n) < p_conv)
    micros = (day.day * _US_PER_DAY + hour * _US_PER_HOUR
              + rng.integers(_US_PER_HOUR, size=n))
    price = w.item_price[items] + 0.1 * rng.normal(size=n)
    quality_hist = w.item_quality[items] + 0.3 * rng.normal(size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    start_us = int((START - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    table = pa.table({
        "impression_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        "event_time": pa.array(start_us + micros, pa.timestamp("us")),
        "user_id": _names("u", users),
        "item_id": _names("i", items),
        "item_category": _names("c", category),
        "recent_categories": pa.ListArray.from_arrays(pa.array(offsets), _names("c", recent)),
        "user_segment": pa.array(w.user_segment[users].astype(np.int64)),
        "hour": pa.array(hour.astype(np.int64)),
        "device": pa.array(device.astype(np.int64)),
        "slot": pa.array(slot.astype(np.int64)),
        "price": pa.array(price.astype(np.float32)),
        "item_quality_hist": pa.array(quality_hist.astype(np.float32)),
        "user_activity": pa.array(w.user_activity[users].astype(np.float32)),
        "context_score": pa.array(context),
        "click": pa.array(click.astype(np.int8)),
        "conversion": pa.array(conversion.astype(np.int8)),
        "p_click": pa.array(p_click),
        "p_conversion_given_click": pa.array(p_conv),
    })
    return table.take(pa.array(np.argsort(micros, kind="stable")))


def score(world: World, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(p_click, p_conversion_given_click) [N] float64 of a raw export's rows under ``world``,
    from its id, context and recent-category columns."""
    users, items = (_indices(table[c]) for c in ("user_id", "item_id"))
    recent = table["recent_categories"].combine_chunks()
    owner = pc.list_parent_indices(recent).to_numpy()
    own_category = pc.take(table["item_category"].combine_chunks(), pa.array(owner))
    hit = pc.equal(pc.list_flatten(recent), own_category).to_numpy(zero_copy_only=False)
    match = np.bincount(owner, weights=hit, minlength=table.num_rows) > 0
    cols = {c: table[c].to_numpy() for c in ("hour", "device", "slot", "context_score")}
    click_logit, conv_logit = funnel_logits(world, users, items, cols["hour"], cols["device"],
                                            cols["slot"], match,
                                            cols["context_score"].astype(np.float64))
    return _sigmoid(click_logit), _sigmoid(conv_logit)


def day_path(root: str | Path, day: int) -> Path:
    return Path(root) / "raw" / f"day-{day:04d}.parquet"


def generate_days(cfg: Config, root: str | Path | None = None) -> dict[str, int]:
    """Writes ``root/raw/day-NNNN.parquet`` for ``synthetic.days`` days (old day files are
    removed first); returns rows written per day file stem."""
    syn = cfg.synthetic
    root = Path(root or cfg.data.root)
    (root / "raw").mkdir(parents=True, exist_ok=True)
    for old in (root / "raw").glob("day-*.parquet"):
        old.unlink()
    counts = {}
    for day in days(syn, cfg.seed):
        rng = np.random.default_rng([cfg.seed, 13, day.day])
        table = sample_day(day, syn.rows_per_day, rng, day.day * syn.rows_per_day)
        path = day_path(root, day.day)
        pq.write_table(table, path, row_group_size=syn.row_group_size)
        counts[path.stem] = table.num_rows
    return counts


def _names(prefix: str, index: np.ndarray) -> pa.Array:
    """``prefix<index>`` strings, built in Arrow (a Python loop over a million rows is slow)."""
    text = pc.cast(pa.array(index.astype(np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, text, "")


def _indices(names: pa.ChunkedArray) -> np.ndarray:
    """``u123`` -> 123."""
    digits = pc.utf8_slice_codeunits(names.combine_chunks(), 1)
    return pc.cast(digits, pa.int64()).to_numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
