"""Long-tailed synthetic export (``synthetic.kind: longtail``): a click -> conversion funnel
whose user and item ids are Zipf-distributed over large id spaces, written as a *raw* export
(string ids) for `recmtl prepare`, so vocabularies and ``min_count`` apply as on real logs.

The id of popularity rank ``r`` is drawn with probability ~ ``r ** -exponent`` (ranks shuffled
over the ids); with ``num_users`` / ``num_items`` in the hundreds of thousands most ids occur
once. Probabilities (``synthetic.longtail`` knobs in ``recmtl/config/longtail.py``):

    p_click = sigmoid(-2.6 + <u, v> + user_bias + item_bias + popularity_effect * pop
                      + hour, device effects + 0.3 context_score)
    p_conversion_given_click = sigmoid(-1.4 + <u, M v> - 0.6 price + 0.5 item_bias)
    conversion = click * Bernoulli(p_conversion_given_click)

``u`` and ``v`` are a segment / category centre plus an individual part, so a rare id is
predictable from ``user_segment`` / ``item_category`` up to its own effects; ``pop`` is the
item's log draw weight, standardised over impressions. The true probabilities are written beside the labels
(``p_click``, ``p_conversion_given_click``) so the oracle AUC is known. Deterministic by seed.

    recmtl generate configs/longtail/longtail.yaml    # -> data/longtail/raw/part-*.parquet
    recmtl prepare configs/longtail/prepare.yml       # -> data/longtail/prepared/longtail.yaml
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recmtl.config import Config, SyntheticConfig

NUM_HOURS = 24
NUM_DEVICES = 4


@dataclass(frozen=True)
class LongtailWorld:
    """The latent state every row is drawn from."""

    user_draw_p: np.ndarray  # [U]
    user_segment: np.ndarray  # [U] int64
    user_vec: np.ndarray  # [U, K]
    user_bias: np.ndarray  # [U]
    item_draw_p: np.ndarray  # [I]
    item_category: np.ndarray  # [I] int64
    item_vec: np.ndarray  # [I, K]
    item_bias: np.ndarray  # [I]
    item_price: np.ndarray  # [I]
    item_pop: np.ndarray  # [I] log draw weight, mean 0 / sd 1 over impressions
    cvr_mix: np.ndarray  # [K, K]
    hour_bias: np.ndarray  # [NUM_HOURS]
    device_bias: np.ndarray  # [NUM_DEVICES]


def zipf_p(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Draw probabilities over ``n`` ids: rank ``r`` (1-based) ~ ``r ** -exponent``, the ranks
    shuffled over the ids so that id order means nothing."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return rng.permutation(p / p.sum())


def make_longtail_world(syn: SyntheticConfig, seed: int) -> LongtailWorld:
    rng = np.random.default_rng([seed, 11])
    lt, k = syn.longtail, syn.latent_dim
    seg_centre = rng.normal(size=(syn.num_segments, k))
    cat_centre = rng.normal(size=(syn.num_categories, k))
    user_segment = rng.integers(syn.num_segments, size=syn.num_users)
    item_category = rng.integers(syn.num_categories, size=syn.num_items)
    item_draw_p = zipf_p(syn.num_items, lt.item_exponent, rng)
    log_pop = np.log(item_draw_p)
    # Standardised as drawn (weighted by the draw), so the mean impression's shift is 0.
    pop_mean = float(item_draw_p @ log_pop)
    pop_std = float(np.sqrt(item_draw_p @ (log_pop - pop_mean) ** 2))
    return LongtailWorld(
        user_draw_p=zipf_p(syn.num_users, lt.user_exponent, rng),
        user_segment=user_segment,
        user_vec=(seg_centre[user_segment] + 0.5 * rng.normal(size=(syn.num_users, k)))
        / np.sqrt(k),
        user_bias=rng.normal(scale=lt.user_bias_scale, size=syn.num_users),
        item_draw_p=item_draw_p,
        item_category=item_category,
        item_vec=cat_centre[item_category] + 0.5 * rng.normal(size=(syn.num_items, k)),
        item_bias=rng.normal(scale=lt.item_bias_scale, size=syn.num_items),
        item_price=rng.normal(size=syn.num_items),
        item_pop=(log_pop - pop_mean) / pop_std,
        cvr_mix=rng.normal(size=(k, k)) / np.sqrt(k),
        hour_bias=0.3 * np.sin(np.arange(NUM_HOURS) / NUM_HOURS * 2 * np.pi),
        device_bias=rng.normal(scale=0.3, size=NUM_DEVICES),
    )


def sample_longtail(world: LongtailWorld, popularity_effect: float, n: int,
                    rng: np.random.Generator, first_id: int) -> pa.Table:
    """``n`` raw impressions: string ids, int context, float dense, int8 labels, oracles."""
    users = rng.choice(len(world.user_draw_p), size=n, p=world.user_draw_p)
    items = rng.choice(len(world.item_draw_p), size=n, p=world.item_draw_p)
    hour = rng.integers(NUM_HOURS, size=n)
    device = rng.integers(NUM_DEVICES, size=n)
    context_score = rng.normal(size=n)
    u, v = world.user_vec[users], world.item_vec[items]
    click_logit = (-2.6 + np.einsum("nk,nk->n", u, v) + world.user_bias[users]
                   + world.item_bias[items] + popularity_effect * world.item_pop[items]
                   + world.hour_bias[hour] + world.device_bias[device] + 0.3 * context_score)
    conv_logit = (-1.4 + np.einsum("nk,kj,nj->n", u, world.cvr_mix, v)
                  - 0.6 * world.item_price[items] + 0.5 * world.item_bias[items])
    p_click = 1.0 / (1.0 + np.exp(-click_logit))
    p_conv = 1.0 / (1.0 + np.exp(-conv_logit))
    click = rng.random(n) < p_click
    conversion = click & (rng.random(n) < p_conv)
    price = world.item_price[items] + 0.1 * rng.normal(size=n)
    return pa.table({
        "impression_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        "user_id": _prefixed("u", users),
        "item_id": _prefixed("i", items),
        "user_segment": _prefixed("s", world.user_segment[users]),
        "item_category": _prefixed("c", world.item_category[items]),
        "hour": pa.array(hour.astype(np.int64)),
        "device": pa.array(device.astype(np.int64)),
        "price": pa.array(np.exp(price).astype(np.float32)),  # positive, skewed: log1p in prepare
        "context_score": pa.array(context_score.astype(np.float32)),
        "click": pa.array(click.astype(np.int8)),
        "conversion": pa.array(conversion.astype(np.int8)),
        "p_click": pa.array(p_click.astype(np.float32)),
        "p_conversion_given_click": pa.array(p_conv.astype(np.float32)),
    })


def generate_longtail(cfg: Config, root: str | Path | None = None) -> dict[str, int]:
    """Writes ``root/raw/part-NNNNN.parquet`` (``train_rows + valid_rows + test_rows`` rows;
    `recmtl prepare` splits them); returns ``{"raw": rows}``."""
    syn = cfg.synthetic
    out = Path(root or cfg.data.root) / "raw"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    world = make_longtail_world(syn, cfg.seed)
    rng = np.random.default_rng([cfg.seed, 12])
    rows = syn.train_rows + syn.valid_rows + syn.test_rows
    for part, start in enumerate(range(0, rows, syn.rows_per_file)):
        n = min(syn.rows_per_file, rows - start)
        table = sample_longtail(world, syn.longtail.popularity_effect, n, rng, start)
        pq.write_table(table, out / f"part-{part:05d}.parquet", row_group_size=syn.row_group_size)
    return {"raw": rows}


def _prefixed(prefix: str, ids: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(ids.astype(np.int64)).cast(pa.string()), "")
