"""Synthetic feature store: an impression -> click -> conversion funnel from latent factors.

Users belong to segments and items to categories; both carry latent vectors (segment/category
centre plus an individual part), so most of the signal is learnable from profile ids and the
rest from the id embeddings themselves. Each impression draws a user (activity-skewed), an item
(popularity-skewed) and a context (hour, device, slot); click and conversion are Bernoulli draws
from known probabilities, which are written beside the labels so the oracle AUC is known:

    p_click = sigmoid(b_c + <u, v> + quality + slot, hour, device effects + recent-category match)
    p_conversion_given_click = sigmoid(b_v + <u, M v> - price + quality + device effect)
    conversion = click * Bernoulli(p_conversion_given_click)
    log_watch_time = click * log1p(exp(2 + 0.8 quality + 0.5 <u, v> + 0.3 match + 0.5 noise))

Every split is written as several Parquet part files with row groups sized for streaming.
Deterministic by seed: the same config and seed give byte-identical columns. With
``synthetic.days > 0`` the same model writes a raw export per day instead, with catalogue
churn and drift (``days.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.synthetic.parts import SPLITS, write_split
from recmtl.config import Config, SyntheticConfig

NUM_HOURS = 24
NUM_DEVICES = 4
NUM_SLOTS = 10
MAX_RECENT = 6
DENSE_COLUMNS = ("price", "item_quality_hist", "user_activity", "context_score")


@dataclass(frozen=True)
class World:
    """The latent state shared by every split."""

    user_segment: np.ndarray  # [U] int64
    user_vec: np.ndarray  # [U, K]
    user_activity: np.ndarray  # [U]
    user_draw_p: np.ndarray  # [U] sampling probability of each user
    item_category: np.ndarray  # [I] int64
    item_vec: np.ndarray  # [I, K]
    item_quality: np.ndarray  # [I]
    item_price: np.ndarray  # [I]
    item_draw_p: np.ndarray  # [I]
    segment_top_categories: np.ndarray  # [S, 8] categories each segment likes most
    cvr_mix: np.ndarray  # [K, K] interaction matrix of the conversion model
    slot_bias: np.ndarray  # [NUM_SLOTS]
    hour_bias: np.ndarray  # [NUM_HOURS]
    device_bias: np.ndarray  # [NUM_DEVICES, 2] (click, conversion)
    num_categories: int


def make_world(cfg: SyntheticConfig, seed: int) -> World:
    return make_world_and_centres(cfg, seed)[0]


def make_world_and_centres(cfg: SyntheticConfig,
                           seed: int) -> tuple[World, np.ndarray, np.ndarray]:
    """The world, with the segment [S, K] and category [C, K] centres its vectors are drawn
    around (before the user vectors' 1 / sqrt(K) scaling); the day generator drifts them."""
    rng = np.random.default_rng([seed, 0])
    k = cfg.latent_dim
    seg_centre = rng.normal(size=(cfg.num_segments, k))
    cat_centre = rng.normal(size=(cfg.num_categories, k))
    user_segment = rng.integers(cfg.num_segments, size=cfg.num_users)
    user_vec = seg_centre[user_segment] + 0.15 * rng.normal(size=(cfg.num_users, k))
    user_activity = rng.normal(size=cfg.num_users)
    cat_p = _zipf_p(cfg.num_categories, 0.9, rng)
    item_category = rng.choice(cfg.num_categories, size=cfg.num_items, p=cat_p)
    item_vec = cat_centre[item_category] + 0.15 * rng.normal(size=(cfg.num_items, k))
    affinity = seg_centre @ cat_centre.T  # [S, C]
    world = World(
        user_segment=user_segment,
        user_vec=user_vec / np.sqrt(k),
        user_activity=user_activity,
        user_draw_p=_softmax(0.8 * user_activity),
        item_category=item_category,
        item_vec=item_vec,
        item_quality=rng.normal(scale=0.6, size=cfg.num_items),
        item_price=rng.normal(size=cfg.num_items),
        item_draw_p=_zipf_p(cfg.num_items, 0.8, rng),
        segment_top_categories=np.argsort(-affinity, axis=1)[:, :8],
        cvr_mix=rng.normal(size=(k, k)) / np.sqrt(k),
        slot_bias=-0.12 * np.arange(NUM_SLOTS),
        hour_bias=0.3 * np.sin(np.arange(NUM_HOURS) / NUM_HOURS * 2 * np.pi),
        device_bias=rng.normal(scale=0.3, size=(NUM_DEVICES, 2)),
        num_categories=cfg.num_categories,
    )
    return world, seg_centre, cat_centre


def sample_impressions(world: World, n: int, rng: np.random.Generator, first_id: int,
                       extra_sparse: tuple[int, ...] = (), extra_dense: int = 0) -> pa.Table:
    """Draws ``n`` impressions; returns them as an Arrow table (labels int8, dense float32)."""
    users = rng.choice(len(world.user_draw_p), size=n, p=world.user_draw_p)
    items = rng.choice(len(world.item_draw_p), size=n, p=world.item_draw_p)
    hour = rng.integers(NUM_HOURS, size=n)
    device = rng.integers(NUM_DEVICES, size=n)
    slot = rng.integers(NUM_SLOTS, size=n)
    category = world.item_category[items]

    lengths, recent, match = recent_categories(world, users, category, rng)

    u = world.user_vec[users]
    v = world.item_vec[items]
    context_score = rng.normal(size=n)
    quality = world.item_quality[items]
    price = world.item_price[items]
    click_logit, conv_logit = funnel_logits(world, users, items, hour, device, slot, match,
                                            context_score)
    p_click = _sigmoid(click_logit)
    p_conv = _sigmoid(conv_logit)
    click = rng.random(n) < p_click
    conversion = click & (rng.random(n) < p_conv)

    # Watch time of clicked impressions, log1p(seconds): a regression target. Its noise has its
    # own generator so that adding it left every other column unchanged.
    noise = np.random.default_rng([first_id, 7]).normal(size=n)
    log_watch = click * np.log1p(np.exp(2.0 + 0.8 * quality + 0.5 * np.einsum("nk,nk->n", u, v)
                                        + 0.3 * match + 0.5 * noise))

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    columns: dict[str, pa.Array] = {
        "impression_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        "user_id": pa.array(users.astype(np.int64)),
        "item_id": pa.array(items.astype(np.int64)),
        "item_category": pa.array(category.astype(np.int64)),
        "user_segment": pa.array(world.user_segment[users].astype(np.int64)),
        "hour": pa.array(hour.astype(np.int64)),
        "device": pa.array(device.astype(np.int64)),
        "slot": pa.array(slot.astype(np.int64)),
        "recent_categories": pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(recent.astype(np.int64))
        ),
        "price": pa.array((price + 0.1 * rng.normal(size=n)).astype(np.float32)),
        "item_quality_hist": pa.array((quality + 0.3 * rng.normal(size=n)).astype(np.float32)),
        "user_activity": pa.array(world.user_activity[users].astype(np.float32)),
        "context_score": pa.array(context_score.astype(np.float32)),
        "click": pa.array(click.astype(np.int8)),
        "conversion": pa.array(conversion.astype(np.int8)),
        "p_click": pa.array(p_click.astype(np.float32)),
        "p_conversion_given_click": pa.array(p_conv.astype(np.float32)),
        "log_watch_time": pa.array(log_watch.astype(np.float32)),
    }
    # Extra columns widen the workload (benchmarks) without changing the funnel.
    for i, cardinality in enumerate(extra_sparse):
        columns[f"ctx_{i}"] = pa.array(rng.integers(cardinality, size=n, dtype=np.int64))
    for i in range(extra_dense):
        columns[f"dense_{i}"] = pa.array(rng.normal(size=n).astype(np.float32))
    return pa.table(columns)


def recent_categories(world: World, users: np.ndarray, category: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each impression's recent categories, mostly what the user's segment likes, sometimes
    anything: (lengths [N], the categories of all rows end to end [sum(lengths)], whether the
    impression's own category is among them [N] bool)."""
    n = len(users)
    lengths = rng.integers(0, MAX_RECENT + 1, size=n)
    owner = np.repeat(np.arange(n), lengths)
    liked = world.segment_top_categories[world.user_segment[users][owner],
                                         rng.integers(8, size=len(owner))]
    anything = rng.integers(world.num_categories, size=len(owner))
    recent = np.where(rng.random(len(owner)) < 0.8, liked, anything)
    match = np.bincount(owner, weights=(recent == category[owner]), minlength=n) > 0
    return lengths, recent, match


def funnel_logits(world: World, users: np.ndarray, items: np.ndarray, hour: np.ndarray,
                  device: np.ndarray, slot: np.ndarray, match: np.ndarray,
                  context_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true click and conversion-given-click logits [N] of impressions (the formulas of
    the module docstring)."""
    u = world.user_vec[users]
    v = world.item_vec[items]
    quality = world.item_quality[items]
    click_logit = (
        -2.7 + 1.2 * np.einsum("nk,nk->n", u, v) + quality + 0.3 * world.user_activity[users]
        + world.slot_bias[slot] + world.hour_bias[hour] + world.device_bias[device, 0]
        + 0.7 * match + 0.3 * context_score
    )
    conv_logit = (
        -1.5 + 1.0 * np.einsum("nk,kj,nj->n", u, world.cvr_mix, v)
        - 0.7 * world.item_price[items] + 0.5 * quality + world.device_bias[device, 1]
    )
    return click_logit, conv_logit


def generate_funnel(cfg: Config, root: str | Path | None = None) -> dict[str, int]:
    """Writes ``root/{train,valid,test}/part-NNNNN.parquet``; returns rows written per split."""
    syn = cfg.synthetic
    root = Path(root or cfg.data.root)
    world = make_world(syn, cfg.seed)
    counts = {}
    first_id = 0
    for split_index, (split, rows) in enumerate(
        zip(SPLITS, (syn.train_rows, syn.valid_rows, syn.test_rows), strict=True)
    ):
        rng = np.random.default_rng([cfg.seed, 1, split_index])
        for _ in write_split(root / split, rows, syn.rows_per_file, syn.row_group_size, first_id,
                             rng, lambda n, rng, first: sample_impressions(
                                 world, n, rng, first, syn.extra_sparse, syn.extra_dense)):
            pass
        first_id += rows
        counts[split] = rows
    return counts


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _zipf_p(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Popularity-skewed probabilities over ``n`` ids, ranks shuffled so id order means nothing."""
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(p / p.sum())
