"""Bootstrap interval for AUC: a Poisson bootstrap on merged runs of the sorted rows.

Method. The Poisson bootstrap gives every row an independent Poisson(1) weight per resample
instead of drawing n rows with replacement (multinomial counts); the two agree as n grows and
the Poisson form is the usual one at scale (Hanley & MacGibbon 2006; Chamandy et al. 2012,
"Estimating uncertainty for massive data streams"). Its advantage here is exact aggregation:
a sum of k independent Poisson(1) weights is Poisson(k), so rows that play the same role in
the AUC can share one draw. AUC only asks, for each positive, how many negatives score below
it (ties count half). In score order, a stretch of consecutive positives with no negative
among them (nor tied with them) sees the same negatives below, and likewise for negatives; so
the sorted rows collapse into *cells*: maximal stretches of one class, plus each run of tied
scores holding both classes. A cell with ``a`` positives and ``b`` negatives draws Poisson(a)
and Poisson(b), which has exactly the distribution of the sum of its rows' weights, and the
weighted AUC of the resample is

    U = sum_c A_c * (B_<c + B_c / 2),   AUC* = U / (sum A * sum B),

with ``B_<c`` the weight of the negatives in cells below ``c``. Each resample costs O(cells),
about 2 * min(positives, negatives), instead of a fresh O(n log n) sort; the rows are sorted
once (``recmtl.metrics.ranking``). Resamples where a class gets zero weight are dropped.

Drawing. Poisson(k) comes from its inverse CDF at a uniform u. u's top 12 bits pick one of
4096 buckets; a lookup table gives the answer for every bucket that lies within one step of
the CDF, and only draws landing in a bucket that straddles a step (a few percent) read more
bits of u and binary-search the CDF. That is exact, ~4x cheaper than ``numpy``'s Poisson
sampler, and needs no sorting of cells by mean. Means above ``TABLE_MAX`` (rare: one-class
stretches of over a thousand rows) use ``numpy``'s sampler.
"""

from __future__ import annotations

import functools

import numpy as np

from recmtl.metrics.ranking import Ranking, check_scores, rank

TABLE_MAX = 1024  # largest Poisson mean drawn from a lookup table
BUCKET_BITS = 12
STRADDLE = np.iinfo(np.uint16).max  # lookup entry: the bucket spans a step of the CDF
CHUNK_DRAWS = 8_000_000  # draws held at once: 64 MB per float64 array


class Cells:
    """A task's rows in score order collapsed into cells (see the module docstring).

    ``pos``/``neg`` ``[m]``: rows of each class per cell. The weighted AUC needs only the
    cells holding positives (``pos_cells``, P of them) and those holding negatives
    (``neg_cells``, N), both in score order.
    """

    def __init__(self, r: Ranking) -> None:
        kind = np.where(r.run_neg == 0, 1, np.where(r.run_pos == 0, 0, 2))  # pos, neg, both
        new_cell = np.empty(len(kind), dtype=bool)
        new_cell[:1] = True
        np.not_equal(kind[1:], kind[:-1], out=new_cell[1:])
        new_cell[1:] |= kind[1:] == 2
        self.cell_of_run = np.cumsum(new_cell) - 1
        m = int(self.cell_of_run[-1]) + 1 if len(kind) else 0
        self.pos = np.bincount(self.cell_of_run, weights=r.run_pos, minlength=m)
        self.neg = np.bincount(self.cell_of_run, weights=r.run_neg, minlength=m)
        self.pos_cells = np.flatnonzero(self.pos > 0)
        self.neg_cells = np.flatnonzero(self.neg > 0)
        # Per positive cell: negative cells below it, and whether it holds negatives too (a
        # run of tied scores), in which case it is also the next negative cell.
        self.neg_below = np.searchsorted(self.neg_cells, self.pos_cells, side="left")
        nxt = np.minimum(self.neg_below, max(len(self.neg_cells) - 1, 0))
        self.tied = (self.neg_cells[nxt] == self.pos_cells if len(self.neg_cells)
                     else np.zeros(len(self.pos_cells), dtype=bool))
        self.tied_slot = nxt[self.tied]
        self.tied_pos = np.flatnonzero(self.tied)
        self._ranking = r

    def auc(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``[R]`` weighted AUC per resample (NaN where a class weighs 0) from weights ``a
        [R, P]`` per positive cell and ``b [R, N]`` per negative cell, both in score order."""
        below = np.zeros((len(b), b.shape[1] + 1))
        np.cumsum(b, axis=1, out=below[:, 1:])
        u = np.einsum("rp,rp->r", a, np.take(below, self.neg_below, axis=1))
        if len(self.tied_slot):
            u += 0.5 * np.einsum("rp,rp->r", np.take(a, self.tied_pos, axis=1),
                                 np.take(b, self.tied_slot, axis=1))
        pairs = a.sum(axis=1) * below[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, u / pairs, np.nan)

    def row_cells(self) -> np.ndarray:
        """``[n]`` the cell of each row, rows in their original order."""
        return self.cell_of_run[self._ranking.dense_rank()]

    def weight_sums(self, row_cell: np.ndarray, labels: np.ndarray, weights: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Row weights ``[n]`` summed per cell: ``(a [P], b [N])`` as ``auc`` takes them."""
        m = len(self.pos)
        is_pos = np.asarray(labels) > 0.5
        w = np.asarray(weights, dtype=np.float64)
        a = np.bincount(row_cell, weights=w * is_pos, minlength=m)[self.pos_cells]
        b = np.bincount(row_cell, weights=w * ~is_pos, minlength=m)[self.neg_cells]
        return a, b


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float | None:
    """AUC with row weights (as ``sklearn.metrics.roc_auc_score(sample_weight=...)``), through
    the cells: what every bootstrap resample computes."""
    y, s = check_scores(labels, scores)
    cells = Cells(rank(y, s))
    a, b = cells.weight_sums(cells.row_cells(), y, weights)
    value = cells.auc(a[None, :], b[None, :])[0]
    return None if np.isnan(value) else float(value)


def poisson_cdf(mean: int) -> np.ndarray:
    """CDF of Poisson(mean) at 0, 1, ... until the tail is below float64 resolution."""
    x = np.arange(int(mean + 12 * np.sqrt(mean) + 40), dtype=np.float64)
    log_factorial = np.r_[0.0, np.cumsum(np.log(x[1:]))]
    cdf = np.cumsum(np.exp(x * np.log(mean) - mean - log_factorial))
    return cdf / cdf[-1]


@functools.lru_cache(maxsize=TABLE_MAX)
def _bucket_table(mean: int) -> tuple[np.ndarray, np.ndarray]:
    """``(answer per bucket [4096] uint16, CDF)`` for Poisson(mean); STRADDLE marks buckets
    with a CDF step inside. Cached (read-only by convention): the same means recur across
    cells, tasks and reports."""
    cdf = poisson_cdf(mean)
    buckets = 1 << BUCKET_BITS
    # Bucket j holds u in [j, j + 1) / 4096: one answer if no CDF step falls inside.
    first = np.searchsorted(cdf, np.arange(buckets) / buckets, side="right")
    last = np.searchsorted(cdf, np.arange(1, buckets + 1) / buckets, side="left")
    return np.where(first == last, first, STRADDLE).astype(np.uint16), cdf


class PoissonSampler:
    """Independent Poisson(means[j]) draws for a fixed vector of positive integer means, by
    bucketed inverse CDF (see the module docstring)."""

    def __init__(self, means: np.ndarray) -> None:
        means = np.asarray(means).astype(np.int64)
        self.size = len(means)
        self.big = np.flatnonzero(means > TABLE_MAX)
        self.big_means = means[self.big]
        distinct, table_of = np.unique(np.minimum(means, TABLE_MAX), return_inverse=True)
        self.table_base = (table_of.ravel() << BUCKET_BITS).astype(np.int32)
        lookup, cdfs = [], []
        for i, k in enumerate(distinct):
            table, cdf = _bucket_table(int(k))
            lookup.append(table)
            cdfs.append(cdf + i)  # shifted by the table index, so one search finds the table
        self.lookup = np.concatenate(lookup) if lookup else np.zeros(0, dtype=np.uint16)
        self.cdf = np.concatenate(cdfs) if cdfs else np.zeros(0)
        self.cdf_start = np.r_[0, np.cumsum([len(c) for c in cdfs])].astype(np.int64)
        self.table_of = table_of.ravel()

    def draw(self, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """``[resamples, len(means)]`` float64 draws."""
        n = resamples * self.size
        bits = np.frombuffer(rng.bytes(2 * n), dtype=np.uint16).reshape(resamples, self.size)
        bucket = bits & ((1 << BUCKET_BITS) - 1)
        found = np.take(self.lookup, self.table_base + bucket)
        out = found.astype(np.float64)
        straddle = np.flatnonzero(found == STRADDLE)
        if len(straddle):
            slot = straddle % self.size
            table = self.table_of[slot]
            u = (bucket.ravel()[straddle] + rng.random(len(straddle))) / (1 << BUCKET_BITS)
            at = np.searchsorted(self.cdf, table + u, side="right")
            # u within 2**-40 of 1 could round onto the next table: clip to this one's end.
            at = np.minimum(at, self.cdf_start[table + 1] - 1)
            out.ravel()[straddle] = at - self.cdf_start[table]
        if len(self.big):
            out[:, self.big] = rng.poisson(self.big_means, (resamples, len(self.big)))
        return out


def poisson_draws(means: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, len(means)]``: independent Poisson(means[j]) draws."""
    return PoissonSampler(means).draw(resamples, rng)


def bootstrap_aucs(r: Ranking, resamples: int, seed: int = 0) -> np.ndarray:
    """AUC of each Poisson-bootstrap resample (see the module docstring), NaNs dropped."""
    cells = Cells(r)
    pos = PoissonSampler(cells.pos[cells.pos_cells])
    neg = PoissonSampler(cells.neg[cells.neg_cells])
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_DRAWS // max(pos.size + neg.size, 1))
    values = [cells.auc(pos.draw(k, rng), neg.draw(k, rng))
              for k in (min(chunk, resamples - done) for done in range(0, resamples, chunk))]
    out = np.concatenate(values) if values else np.zeros(0)
    return out[~np.isnan(out)]


def interval_from_ranking(r: Ranking, resamples: int = 200, seed: int = 0, level: float = 0.95
                          ) -> tuple[float, float] | None:
    """Percentile interval of the bootstrap AUCs; None without resamples or with one class."""
    if resamples <= 0 or r.positives == 0 or r.negatives == 0:
        return None
    values = bootstrap_aucs(r, resamples, seed)
    if len(values) == 0:
        return None
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def auc_interval(labels: np.ndarray, scores: np.ndarray, resamples: int = 200, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile Poisson-bootstrap interval of AUC over rows (see the module docstring)."""
    return interval_from_ranking(rank(labels, scores), resamples, seed, level)
