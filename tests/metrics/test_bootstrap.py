import numpy as np
import pytest
from scipy.stats import chisquare, poisson
from sklearn.metrics import roc_auc_score

from recmtl.metrics.auc import auc
from recmtl.metrics.bootstrap import (
    TABLE_MAX,
    auc_interval,
    bootstrap_aucs,
    poisson_draws,
    weighted_auc,
)
from recmtl.metrics.ranking import rank, score_keys


def _data(n, seed, decimals=2, pos_rate=0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos_rate).astype(float)
    s = np.round(rng.random(n) + 0.4 * y, decimals)  # ties, also between the classes
    return y, s


def _delong_se(y, s):
    """DeLong's standard error of AUC from placement values (ties count half)."""
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    v10 = (np.searchsorted(neg, s[y == 1], "left") + np.searchsorted(neg, s[y == 1], "right")
           ) / (2 * len(neg))
    v01 = 1 - (np.searchsorted(pos, s[y == 0], "left") + np.searchsorted(pos, s[y == 0], "right")
               ) / (2 * len(pos))
    return np.sqrt(v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("as_float32", [False, True])
def test_cell_weighted_auc_matches_sklearn_sample_weight(seed, as_float32):
    # What each resample computes: AUC with integer row weights, through the merged cells.
    y, s = _data(3000, seed, decimals=1)  # 0.1, 0.2, ... are not float32 values
    if as_float32:
        s = s.astype(np.float32).astype(np.float64)  # model outputs: the packed-key sort
    assert (score_keys(s) is not None) == as_float32
    w = np.random.default_rng(seed + 10).poisson(1.0, len(y))
    assert weighted_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert weighted_auc(y, s, np.ones(len(y))) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("mean", [1, 2, 7, 40, 300, TABLE_MAX, TABLE_MAX + 500])
def test_poisson_draws_follow_the_poisson_pmf(mean):
    draws = poisson_draws(np.full(40, mean), 2500, np.random.default_rng(mean)).ravel()
    assert np.all(draws == np.round(draws)) and draws.min() >= 0
    # Chi-square against scipy's pmf over bins of >= 50 expected draws (tails pooled).
    lo, hi = poisson.ppf([1e-4, 1 - 1e-4], mean)
    edges = np.unique(np.r_[-0.5, np.arange(lo, hi + 1) + 0.5, np.inf])
    observed, _ = np.histogram(draws, edges)
    expected = np.diff(poisson.cdf(np.minimum(edges, 1e9), mean)) * len(draws)
    merged_o, merged_e, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected, strict=True):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 50:
            merged_o.append(acc_o), merged_e.append(acc_e)
            acc_o = acc_e = 0.0
    merged_o[-1] += acc_o
    merged_e[-1] += acc_e
    merged_e = np.array(merged_e) * sum(merged_o) / sum(merged_e)
    assert chisquare(merged_o, merged_e).pvalue > 1e-3


def test_cell_bootstrap_matches_a_row_level_poisson_bootstrap():
    # The reference resamples rows: a Poisson(1) weight per row, AUC by sklearn. Both are
    # Monte Carlo draws of the same distribution, so their spreads and quantiles agree.
    y, s = _data(1500, 5)
    rng = np.random.default_rng(1)
    brute = np.array([roc_auc_score(y, s, sample_weight=rng.poisson(1.0, len(y)))
                      for _ in range(600)])
    cells = bootstrap_aucs(rank(y, s), 600, seed=2)
    assert len(cells) == 600
    sd = brute.std()
    assert cells.std() == pytest.approx(sd, rel=0.12)
    assert cells.mean() == pytest.approx(brute.mean(), abs=0.15 * sd)
    for q in (2.5, 97.5):
        assert np.percentile(cells, q) == pytest.approx(np.percentile(brute, q), abs=0.3 * sd)


def test_interval_width_agrees_with_delong():
    y, s = _data(20000, 7)
    a = auc(y, s)
    lo, hi = auc_interval(y, s, resamples=400, seed=0)
    assert lo < a < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * _delong_se(y, s), rel=0.15)
    assert auc_interval(y, s, resamples=400, seed=0) == (lo, hi)  # seeded
    assert auc_interval(y, s, resamples=400, seed=1) != (lo, hi)


def test_no_interval_without_resamples_or_with_one_class():
    y, s = _data(100, 0)
    assert auc_interval(y, s, resamples=0) is None
    assert auc_interval(np.zeros(100), s) is None


class _ScriptedBits:
    """Stands in for ``numpy.random.Generator``: every bucket once, then fixed fractions."""

    def __init__(self, buckets: np.ndarray, fraction: float) -> None:
        self.buckets, self.fraction = buckets.astype(np.uint16), fraction

    def bytes(self, n: int) -> bytes:
        assert n == 2 * len(self.buckets)
        return self.buckets.tobytes()

    def random(self, n: int) -> np.ndarray:
        return np.full(n, self.fraction)


@pytest.mark.parametrize("mean", [1, 3, 40, 700])
@pytest.mark.parametrize("fraction", [0.0, 0.37, 0.999])
def test_draws_are_the_exact_inverse_cdf_in_every_bucket(mean, fraction):
    # A draw is the Poisson quantile at u = (bucket + fraction) / 4096, whether the bucket's
    # answer comes from the lookup table or from the search inside a straddling bucket.
    buckets = np.arange(4096)
    got = poisson_draws(np.array([mean]), 4096, _ScriptedBits(buckets, fraction)).ravel()
    u = (buckets + fraction) / 4096
    assert np.array_equal(got, poisson.ppf(u, mean) + (poisson.cdf(poisson.ppf(u, mean), mean) == u))
