import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recmtl.metrics.calibration import calibration_ratio, ece_equal_mass
from recmtl.metrics.gauc import gauc


def _reference_gauc(y, s, g):
    total, weight, excluded = 0.0, 0, 0
    for group in np.unique(g):
        m = g == group
        if len(np.unique(y[m])) < 2:
            excluded += 1
            continue
        total += roc_auc_score(y[m], s[m]) * m.sum()
        weight += m.sum()
    return total / weight, excluded


@pytest.mark.parametrize("seed", range(4))
def test_gauc_matches_per_group_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    g = rng.integers(0, 200, size=n)  # many tiny groups, some single-class
    y = (rng.random(n) < 0.3).astype(float)
    s = np.round(rng.random(n) + 0.2 * y, 1)  # ties inside groups
    result = gauc(y, s, g)
    expected, excluded = _reference_gauc(y, s, g)
    assert result.gauc == pytest.approx(expected, abs=1e-12)
    assert result.groups_excluded == excluded
    assert result.groups_used + result.groups_excluded == len(np.unique(g))


def test_gauc_hand_worked():
    # group 7: (pos .9, neg .1) -> 1.0 over 2 rows; group 3: pos .2 vs negs .5, .2 -> 0.25 over 3
    # rows; group 5 is single-class and excluded. (2 * 1.0 + 3 * 0.25) / 5 = 0.55
    y = np.array([1, 0, 1, 0, 0, 1])
    s = np.array([0.9, 0.1, 0.2, 0.5, 0.2, 0.3])
    g = np.array([7, 7, 3, 3, 3, 5])
    r = gauc(y, s, g)
    assert r.gauc == pytest.approx(0.55) and (r.groups_used, r.groups_excluded) == (2, 1)


def test_gauc_nan_is_an_error():
    with pytest.raises(ValueError, match="NaN"):
        gauc(np.array([0, 1]), np.array([np.nan, 0.1]), np.array([1, 1]))


def test_ece_matches_loop_reference():
    rng = np.random.default_rng(0)
    p = rng.random(1003)
    # Over-confident at both ends: bins err in both directions, so the binning matters.
    y = (rng.random(1003) < 0.5 + 0.5 * (p - 0.5)).astype(float)
    order = np.argsort(p, kind="mergesort")
    ref = sum(len(b) / len(p) * abs(p[b].mean() - y[b].mean())
              for b in np.array_split(order, 10))
    assert ece_equal_mass(y, p, bins=10) == pytest.approx(ref, abs=1e-12)
    assert ece_equal_mass(y, p, bins=10) != pytest.approx(ece_equal_mass(y, p, bins=2), abs=1e-3)
    assert calibration_ratio(y, p) == pytest.approx(p.mean() / y.mean())


def test_perfectly_calibrated_constant_has_zero_ece():
    y = np.array([1.0, 0.0, 0.0, 0.0] * 25)
    assert ece_equal_mass(y, np.full(100, 0.25), bins=1) == pytest.approx(0.0)
