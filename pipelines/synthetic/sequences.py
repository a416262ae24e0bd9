"""Synthetic feature store with behaviour histories that only a target-aware model can fully use.

The world of ``synthetic.py`` (users in segments, items in categories, latent vectors, quality,
price, popularity) with a history of past interactions on every impression. Click and
conversion depend on a *target-dependent* match between the candidate item and the history:

    m = max_j  exp(SHARPNESS * (cos(v_c, v_j) - 1) - age_j / RECENCY_HOURS)   (0 if no history)
    click_logit = B_CLICK + LATENT_WEIGHT <u, v_c> + quality_c + 0.3 activity_u
                  + hour_bias[hour] + device_bias[device, 0] + match_strength * m
    cvr_logit   = B_CVR + <u, M v_c> - 0.7 price_c + 0.5 quality_c + device_bias[device, 1]
                  + MATCH_CVR_SHARE * match_strength * m
    click ~ Bernoulli(sigmoid(click_logit)); conversion = click * Bernoulli(sigmoid(cvr_logit))

with SHARPNESS = 4, RECENCY_HOURS = 24, B_CLICK = -4.6, LATENT_WEIGHT = 0.8, B_CVR = -2.6,
MATCH_CVR_SHARE = 0.5 and ``match_strength`` 4 by default (CTR about 12%, CVR given a click
about 24% at the default sizes; ``write_sequence_store``'s summary reports them per split).

``v_c`` and ``v_j`` are the latent vectors of the candidate and of history item j (``cos``
their cosine; items of one category have cosines near 1, others near 0 after the kernel);
``u``, ``M`` (``cvr_mix``), quality, price, activity and the biases are ``World``'s. The match
is a max over positions of a candidate-conditioned, recency-weighted similarity, so a pooled
sum or mean of history embeddings computed without the candidate loses both the max and the
recency; attention with the candidate as query and the age as a key feature can represent it.
The latent term keeps a plain model (no history) learning something.

Histories are drawn per impression from the user's segment tastes (not a replay of the user's
own earlier rows) in sessions: each position starts a new interest with probability
``1 - STICKINESS`` (a liked category of the segment with probability ``LIKED``, else the
category of a popularity-drawn item) or repeats the interest before it; the item is drawn by
popularity within the interest's category. The length is geometric on {0, 1, ...} with mean
``mean_history_len``, cut at ``max_history_len``. Gaps between events are
``MIN_GAP_HOURS + Exponential(MEAN_GAP_HOURS)``, the newest event one gap old. Half of the
candidates (``CANDIDATE_LIKED``) come from the segment's liked categories, the rest by
popularity.

Columns of ``{train,valid,test}/part-NNNNN.parquet`` (row groups of ``row_group_size``):
``impression_id`` (unique across splits), ``user_id``, ``item_id`` (the candidate),
``item_category``, ``user_segment``, ``hour``, ``device`` int64; ``price`` (the item's price
plus observation noise), ``user_activity`` float32; ``hist_items``, ``hist_categories``
list<int64>, ``hist_age_hours`` list<float32> and ``hist_age_bucket`` list<int64> (the age on
a half-octave scale, ``age_bucket``: ids 1..``AGE_BUCKETS``), aligned, oldest first (ages strictly
decrease along a list: the last element is the most recent); ``click``, ``conversion`` int8;
``p_click``, ``p_conversion_given_click``, ``p_conversion`` (= p_click * p_cvr, the entire-space
probability of the ``conversion`` label) float64. The probabilities use the written float32
ages, so ``score_table`` recomputes them from the columns.

Empty and null histories: a list of length 0 is a known user with no past behaviour (the
geometric length drew 0, about ``1 / (mean_history_len + 1)`` of the rows). A null (all three
``hist_*`` lists null together, ``NULL_HISTORY_FRACTION`` of the rows) is a logged-out visitor
whose history could not be looked up. Both give ``m = 0``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.synthetic.funnel import NUM_DEVICES, NUM_HOURS, World, make_world
from pipelines.synthetic.parts import SPLITS, rank_auc, write_split
from recmtl.config import Config, SyntheticConfig

SHARPNESS = 4.0  # of the similarity kernel exp(SHARPNESS * (cos - 1))
RECENCY_HOURS = 24.0  # the match's recency decay exp(-age / RECENCY_HOURS)
MEAN_GAP_HOURS = 6.0
MIN_GAP_HOURS = 1.0 / 60  # keeps float32 ages strictly decreasing
STICKINESS = 0.6  # probability a history position repeats the interest before it
LIKED = 0.8  # probability a new interest is one of the segment's liked categories
CANDIDATE_LIKED = 0.5  # probability the candidate comes from a liked category
NULL_HISTORY_FRACTION = 0.03
AGE_BUCKETS = 21  # hist_age_bucket ids 1..21: a table of 22 rows
B_CLICK = -4.6
B_CVR = -2.6
LATENT_WEIGHT = 0.8
MATCH_CVR_SHARE = 0.5


@dataclass(frozen=True)
class SequenceWorldConfig:
    """Knobs of the sequence store. Validated on construction (a ``ValueError`` names the key).

    ``mean_history_len`` is the mean of the geometric length before the cut at
    ``max_history_len``; ``match_strength`` scales the match term of the click logit (and
    ``MATCH_CVR_SHARE`` of it in the conversion logit).
    """

    train_rows: int = 200_000
    valid_rows: int = 20_000
    test_rows: int = 20_000
    rows_per_file: int = 50_000
    row_group_size: int = 8_192
    num_users: int = 20_000
    num_items: int = 10_000
    num_categories: int = 100
    num_segments: int = 32
    latent_dim: int = 8
    max_history_len: int = 50
    mean_history_len: float = 20.0
    match_strength: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("match_strength", "seed"):
                continue
            lowest = 0 if f.name.endswith("_rows") or f.name.endswith("_len") else 1
            if value < lowest:
                raise ValueError(f"SequenceWorldConfig.{f.name} must be >= {lowest}, "
                                 f"got {value!r}")


@dataclass(frozen=True)
class SequenceWorld:
    """``World`` plus what the histories need: unit item vectors and items grouped by
    category with their cumulative popularity (to draw an item of a category by popularity)."""

    world: World
    unit_vec: np.ndarray  # [I, K] item vectors scaled to length 1
    category_items: np.ndarray  # [I] item ids sorted by category
    category_start: np.ndarray  # [C + 1] offsets of each category in category_items
    cum_p: np.ndarray  # [I + 1] cumulative draw probability along category_items


@dataclass(frozen=True)
class Histories:
    """Histories of N rows end to end (T positions), oldest first within a row."""

    lengths: np.ndarray  # [N] int64, 0 for empty and null
    valid: np.ndarray  # [N] bool, False for a null history
    items: np.ndarray  # [T] int64
    age_hours: np.ndarray  # [T] float32, strictly decreasing within a row

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths

    @property
    def owner(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.lengths)), self.lengths)


@dataclass(frozen=True)
class FunnelLogits:
    """The true logits [N] split into the match term and the rest."""

    click_base: np.ndarray
    click_match: np.ndarray
    cvr_base: np.ndarray
    cvr_match: np.ndarray

    @property
    def p_click(self) -> np.ndarray:
        return _sigmoid(self.click_base + self.click_match)

    @property
    def p_cvr(self) -> np.ndarray:
        return _sigmoid(self.cvr_base + self.cvr_match)


def make_sequence_world(cfg: SequenceWorldConfig, seed: int) -> SequenceWorld:
    """The latent world of ``synthetic.make_world`` for these sizes, deterministic by seed."""
    syn = SyntheticConfig(num_users=cfg.num_users, num_items=cfg.num_items,
                          num_categories=cfg.num_categories, num_segments=cfg.num_segments,
                          latent_dim=cfg.latent_dim)
    world = make_world(syn, seed)
    order = np.argsort(world.item_category, kind="stable")
    counts = np.bincount(world.item_category, minlength=cfg.num_categories)
    return SequenceWorld(
        world=world,
        unit_vec=world.item_vec / np.linalg.norm(world.item_vec, axis=1, keepdims=True),
        category_items=order,
        category_start=np.concatenate([[0], np.cumsum(counts)]),
        cum_p=np.concatenate([[0.0], np.cumsum(world.item_draw_p[order])]),
    )


def draw_items(sw: SequenceWorld, categories: np.ndarray | None,
               u: np.ndarray) -> np.ndarray:
    """Items [N] drawn by popularity, by inverse CDF of the uniforms ``u`` [N]: within
    ``categories`` [N] (each with at least one item), or the whole catalogue if None."""
    if categories is None:
        first = np.zeros(len(u), np.int64)
        stop = np.full(len(u), len(sw.category_items))
    else:
        first, stop = sw.category_start[categories], sw.category_start[categories + 1]
    lo, hi = sw.cum_p[first], sw.cum_p[stop]
    pos = np.searchsorted(sw.cum_p, lo + u * (hi - lo), side="right") - 1
    return sw.category_items[np.clip(pos, first, stop - 1)]


def liked_categories(sw: SequenceWorld, segments: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """A liked category [N] of each segment, or, where it has no items (tiny catalogues), the
    category of a popularity-drawn item."""
    top = sw.world.segment_top_categories
    liked = top[segments, rng.integers(top.shape[1], size=len(segments))]
    empty = sw.category_start[liked + 1] == sw.category_start[liked]
    if empty.any():
        liked[empty] = sw.world.item_category[draw_items(sw, None, rng.random(empty.sum()))]
    return liked


def interests(sw: SequenceWorld, segments: np.ndarray, liked_p: float,
              rng: np.random.Generator) -> np.ndarray:
    """Categories [N]: a liked one of each segment with probability ``liked_p``, else the
    category of a popularity-drawn item."""
    chosen = liked_categories(sw, segments, rng)
    browse = rng.random(len(segments)) >= liked_p
    chosen[browse] = sw.world.item_category[draw_items(sw, None, rng.random(browse.sum()))]
    return chosen


def sample_histories(sw: SequenceWorld, cfg: SequenceWorldConfig, users: np.ndarray,
                     rng: np.random.Generator) -> Histories:
    """Histories of the impressions of ``users`` [N] (the sessions of the module docstring)."""
    n = len(users)
    lengths = np.minimum(rng.geometric(1.0 / (cfg.mean_history_len + 1.0), size=n) - 1,
                         cfg.max_history_len)
    valid = rng.random(n) >= NULL_HISTORY_FRACTION
    lengths = np.where(valid, lengths, 0).astype(np.int64)
    total = int(lengths.sum())
    owner = np.repeat(np.arange(n), lengths)
    row_start = np.zeros(total, bool)
    row_start[(np.cumsum(lengths) - lengths)[lengths > 0]] = True

    new = row_start | (rng.random(total) >= STICKINESS)
    new_at = np.flatnonzero(new)
    # Each position takes the interest of the last new one at or before it (every row starts
    # with a new one, so no interest leaks into the next row).
    interest = interests(sw, sw.world.user_segment[users][owner[new_at]], LIKED, rng)
    interest = interest[np.cumsum(new) - 1]
    items = draw_items(sw, interest, rng.random(total))

    # age_j = gap_j + gap_{j+1} + ... + gap_last: the newest event is one gap old.
    gaps = MIN_GAP_HOURS + rng.exponential(MEAN_GAP_HOURS, size=total)
    cum = np.cumsum(gaps)
    row_total = np.zeros(n)
    ends = np.cumsum(lengths)
    row_total[lengths > 0] = cum[ends[lengths > 0] - 1]
    age = (row_total[owner] - cum + gaps).astype(np.float32)
    return Histories(lengths=lengths, valid=valid, items=items.astype(np.int64), age_hours=age)


def match_term(sw: SequenceWorld, candidates: np.ndarray, hist: Histories) -> np.ndarray:
    """m [N] of the module docstring: the best recency-weighted similarity of the candidate
    [N] to a history item, 0 for empty and null histories."""
    owner = hist.owner
    cos = np.einsum("tk,tk->t", sw.unit_vec[hist.items], sw.unit_vec[candidates[owner]])
    score = np.exp(SHARPNESS * (cos - 1.0) - hist.age_hours.astype(np.float64) / RECENCY_HOURS)
    m = np.zeros(len(candidates))
    nonempty = hist.lengths > 0
    if nonempty.any():
        # reduceat over the starts of non-empty rows: each segment runs to the next one's start.
        m[nonempty] = np.maximum.reduceat(score, hist.starts[nonempty])
    return m


def sequence_logits(sw: SequenceWorld, cfg: SequenceWorldConfig, users: np.ndarray,
                    items: np.ndarray, hour: np.ndarray, device: np.ndarray,
                    hist: Histories) -> FunnelLogits:
    """The true logits of impressions (the formulas of the module docstring), decomposed."""
    w = sw.world
    u, v = w.user_vec[users], w.item_vec[items]
    quality = w.item_quality[items]
    m = match_term(sw, items, hist)
    return FunnelLogits(
        click_base=(B_CLICK + LATENT_WEIGHT * np.einsum("nk,nk->n", u, v) + quality
                    + 0.3 * w.user_activity[users] + w.hour_bias[hour]
                    + w.device_bias[device, 0]),
        click_match=cfg.match_strength * m,
        cvr_base=(B_CVR + np.einsum("nk,kj,nj->n", u, w.cvr_mix, v)
                  - 0.7 * w.item_price[items] + 0.5 * quality + w.device_bias[device, 1]),
        cvr_match=MATCH_CVR_SHARE * cfg.match_strength * m,
    )


def sample_rows(sw: SequenceWorld, cfg: SequenceWorldConfig, n: int, rng: np.random.Generator,
                first_id: int) -> pa.Table:
    """``n`` impressions with their histories, labels and oracle probabilities."""
    w = sw.world
    users = rng.choice(len(w.user_draw_p), size=n, p=w.user_draw_p)
    segments = w.user_segment[users]
    items = draw_items(sw, interests(sw, segments, CANDIDATE_LIKED, rng), rng.random(n))
    hour = rng.integers(NUM_HOURS, size=n)
    device = rng.integers(NUM_DEVICES, size=n)
    hist = sample_histories(sw, cfg, users, rng)

    logits = sequence_logits(sw, cfg, users, items, hour, device, hist)
    p_click, p_cvr = logits.p_click, logits.p_cvr
    click = rng.random(n) < p_click
    conversion = click & (rng.random(n) < p_cvr)
    price = w.item_price[items] + 0.1 * rng.normal(size=n)

    offsets = pa.array(np.concatenate([[0], np.cumsum(hist.lengths)]).astype(np.int32))
    null = pa.array(~hist.valid)

    def as_list(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(values), mask=null)

    return pa.table({
        "impression_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        "user_id": pa.array(users.astype(np.int64)),
        "item_id": pa.array(items.astype(np.int64)),
        "item_category": pa.array(w.item_category[items].astype(np.int64)),
        "user_segment": pa.array(segments.astype(np.int64)),
        "hour": pa.array(hour.astype(np.int64)),
        "device": pa.array(device.astype(np.int64)),
        "price": pa.array(price.astype(np.float32)),
        "user_activity": pa.array(w.user_activity[users].astype(np.float32)),
        "hist_items": as_list(hist.items),
        "hist_categories": as_list(w.item_category[hist.items].astype(np.int64)),
        "hist_age_hours": as_list(hist.age_hours),
        "hist_age_bucket": as_list(age_bucket(hist.age_hours)),
        "click": pa.array(click.astype(np.int8)),
        "conversion": pa.array(conversion.astype(np.int8)),
        "p_click": pa.array(p_click),
        "p_conversion_given_click": pa.array(p_cvr),
        "p_conversion": pa.array(p_click * p_cvr),
    })


def age_bucket(age_hours: np.ndarray) -> np.ndarray:
    """Ages in hours -> ids ``1 + floor(2 log2(1 + age))`` capped at ``AGE_BUCKETS``: half-octave
    buckets (the first hour, then ~1.4x wider each), so an id model can learn the recency decay.

    Example:
        >>> age_bucket(np.array([0.0, 1.0, 24.0, 1e6])).tolist()
        [1, 3, 10, 21]
    """
    b = 1 + np.floor(2 * np.log2(1.0 + np.asarray(age_hours, dtype=np.float64)))
    return np.minimum(b, AGE_BUCKETS).astype(np.int64)


def histories_of(table: pa.Table) -> Histories:
    """The ``hist_items`` / ``hist_age_hours`` columns of a written table as ``Histories``."""
    items = table["hist_items"].combine_chunks()
    ages = table["hist_age_hours"].combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(items), 0).to_numpy().astype(np.int64)
    return Histories(lengths=lengths, valid=items.is_valid().to_numpy(zero_copy_only=False),
                     items=pc.list_flatten(items).to_numpy().astype(np.int64),
                     age_hours=pc.list_flatten(ages).to_numpy().astype(np.float32))


def score_table(sw: SequenceWorld, cfg: SequenceWorldConfig, table: pa.Table) -> FunnelLogits:
    """The decomposed true logits of written rows, recomputed from their id, context and
    history columns."""
    cols = {c: table[c].to_numpy() for c in ("user_id", "item_id", "hour", "device")}
    return sequence_logits(sw, cfg, cols["user_id"], cols["item_id"], cols["hour"],
                           cols["device"], histories_of(table))


def write_sequence_store(out_dir: Path, cfg: SequenceWorldConfig,
                         seed: int | None = None) -> dict:
    """Writes ``out_dir/{train,valid,test}/part-NNNNN.parquet`` (old parts removed first);
    returns a summary: ``seconds`` and, per split, rows, label rates, mean oracle
    probabilities, history length statistics and oracle AUCs per task (``click``: p_click;
    ``conversion``: p_conversion over all rows; ``cvr``: p_conversion_given_click over clicks).
    ``seed`` defaults to ``cfg.seed``."""
    t0 = time.perf_counter()
    seed = cfg.seed if seed is None else seed
    sw = make_sequence_world(cfg, seed)
    summary: dict = {"seed": seed}
    first_id = 0
    for index, (split, rows) in enumerate(
        zip(SPLITS, (cfg.train_rows, cfg.valid_rows, cfg.test_rows), strict=True)
    ):
        rng = np.random.default_rng([seed, 21, index])
        tables = [t.select(["click", "conversion", "p_click", "p_conversion_given_click",
                            "p_conversion", "hist_items"])
                  for t in write_split(Path(out_dir) / split, rows, cfg.rows_per_file,
                                       cfg.row_group_size, first_id, rng,
                                       lambda n, rng, first: sample_rows(sw, cfg, n, rng,
                                                                         first))]
        first_id += rows
        summary[split] = _split_summary(pa.concat_tables(tables)) if tables else {"rows": 0}
    summary["seconds"] = time.perf_counter() - t0
    return summary


def generate_sequences(cfg: Config, root: str | Path | None = None) -> dict[str, int]:
    """`recmtl generate` for ``synthetic.kind: sequences``: the store under ``root`` (default
    ``data.root``) from the config's ``synthetic`` sizes and ``seed``; rows per split."""
    syn = cfg.synthetic
    world = SequenceWorldConfig(
        train_rows=syn.train_rows, valid_rows=syn.valid_rows, test_rows=syn.test_rows,
        rows_per_file=syn.rows_per_file, row_group_size=syn.row_group_size,
        num_users=syn.num_users, num_items=syn.num_items, num_categories=syn.num_categories,
        num_segments=syn.num_segments, latent_dim=syn.latent_dim,
        max_history_len=syn.max_history_len, mean_history_len=syn.mean_history_len,
        match_strength=syn.match_strength, seed=cfg.seed)
    summary = write_sequence_store(Path(root or cfg.data.root), world)
    return {split: summary[split]["rows"] for split in SPLITS}


def _split_summary(t: pa.Table) -> dict:
    click = t["click"].to_numpy().astype(bool)
    conv = t["conversion"].to_numpy().astype(bool)
    p = {c: t[c].to_numpy() for c in ("p_click", "p_conversion_given_click", "p_conversion")}
    hist = t["hist_items"]
    lengths = pc.fill_null(pc.list_value_length(hist), 0).to_numpy()
    return {
        "rows": t.num_rows,
        "ctr": float(click.mean()),
        "cvr": float(conv[click].mean()) if click.any() else float("nan"),
        "ctcvr": float(conv.mean()),
        "mean_p_click": float(p["p_click"].mean()),
        "mean_p_conversion": float(p["p_conversion"].mean()),
        "mean_history_len": float(lengths.mean()),
        "empty_histories": int(((lengths == 0) & hist.is_valid().to_numpy()).sum()),
        "null_histories": int(hist.null_count),
        "auc": {"click": rank_auc(click, p["p_click"]),
                "conversion": rank_auc(conv, p["p_conversion"]),
                "cvr": rank_auc(conv[click], p["p_conversion_given_click"][click])},
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
