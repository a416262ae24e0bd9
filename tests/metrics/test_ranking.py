import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recmtl.metrics.auc import auc
from recmtl.metrics.calibration import ece_equal_mass
from recmtl.metrics.curves import histogram, reliability_bins
from recmtl.metrics.gauc import gauc
from recmtl.metrics.ranking import rank, score_keys
from recmtl.metrics.report import _curves


def _scores(n, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    s = np.round(rng.normal(size=n) + 0.5 * y, 1)  # negative scores and many ties
    s[:5] = -0.0  # -0.0 ties with 0.0
    return y, s


@pytest.mark.parametrize("seed", range(3))
def test_both_sort_paths_give_the_same_runs(seed):
    y, s64 = _scores(4000, seed)
    s32 = s64.astype(np.float32).astype(np.float64)
    assert score_keys(s64) is None and score_keys(s32) is not None
    for s in (s64, s32):
        r = rank(y, s)
        ref_values, ref_counts = np.unique(s, return_counts=True)  # -0.0 == 0.0 merge here too
        np.testing.assert_array_equal(r.sorted_scores[r.run_start[:-1]], ref_values)
        np.testing.assert_array_equal(np.diff(r.run_start), ref_counts)
        pos = np.array([y[s == v].sum() for v in ref_values])
        np.testing.assert_array_equal(r.run_pos, pos)
        np.testing.assert_array_equal(r.sorted_scores, np.sort(s))
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        # Dense rank: equal scores share the index of their run.
        np.testing.assert_array_equal(r.dense_rank(), np.searchsorted(ref_values, s))


def test_ece_counts_a_cut_run_of_ties_at_its_mean_label():
    # Reference: each row's label replaced by the mean label of its tied run, then plain
    # equal-mass bins in score order; the order of tied rows can no longer matter.
    rng = np.random.default_rng(0)
    p = np.round(rng.random(1003), 1)
    y = (rng.random(1003) < p).astype(float)
    order = np.argsort(p, kind="stable")
    values, inverse = np.unique(p, return_inverse=True)
    run_rate = np.bincount(inverse, weights=y) / np.bincount(inverse)
    y_shared = run_rate[inverse]
    ref = sum(len(b) / len(p) * abs(p[b].mean() - y_shared[b].mean())
              for b in np.array_split(order, 10))
    assert ece_equal_mass(y, p, bins=10) == pytest.approx(ref, abs=1e-12)
    shuffled = rng.permutation(len(p))
    assert ece_equal_mass(y[shuffled], p[shuffled]) == pytest.approx(ece_equal_mass(y, p), abs=1e-12)
    bins = reliability_bins(y, p, bins=10)
    assert sum(b["rows"] for b in bins) == len(p)


def test_histogram_from_the_sorted_scores_matches_numpy():
    rng = np.random.default_rng(1)
    p = np.r_[rng.random(5000), 0.0, 1.0, 0.05, 0.95]  # both ends and exact bin edges
    y = (rng.random(len(p)) < 0.5).astype(float)
    assert _curves(rank(y, p))["histogram"] == histogram(p)


@pytest.mark.parametrize("as_float32", [False, True])
def test_gauc_is_the_same_on_both_sort_paths(as_float32):
    # Float32 scores take the packed (group, score, label) value sort; others an index sort.
    rng = np.random.default_rng(7)
    n = 3000
    g = rng.integers(0, 150, n) * 1000  # sparse ids, not 0..G-1
    y = (rng.random(n) < 0.3).astype(float)
    s = np.round(rng.random(n) + 0.2 * y, 1)
    if as_float32:
        s = s.astype(np.float32).astype(np.float64)
    assert (score_keys(s) is not None) == as_float32
    total = weight = 0.0
    for group in np.unique(g):
        m = g == group
        if len(np.unique(y[m])) == 2:
            total += roc_auc_score(y[m], s[m]) * m.sum()
            weight += m.sum()
    assert gauc(y, s, g).gauc == pytest.approx(total / weight, abs=1e-12)
    assert gauc(y, s, g.astype(np.float64)).gauc == pytest.approx(total / weight, abs=1e-12)
