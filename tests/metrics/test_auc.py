import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recmtl.metrics.auc import auc, logloss


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    y = rng.random(n) < 0.2
    # Coarse scores force many ties; sklearn counts a tie as half a correct pair.
    s = np.round(rng.random(n) + 0.3 * y, 1)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_hand_worked():
    # Pairs (pos, neg): (0.8,0.1) ok, (0.8,0.4) ok, (0.4,0.1) ok, (0.4,0.4) tie -> 3.5 / 4
    assert auc([1, 0, 1, 0], [0.8, 0.1, 0.4, 0.4]) == pytest.approx(0.875)


def test_auc_single_class_is_none():
    assert auc([1, 1, 1], [0.1, 0.2, 0.3]) is None


def test_nan_score_is_an_error():
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])


def test_labels_must_be_binary():
    with pytest.raises(ValueError, match="0 or 1"):
        auc([0, 2], [0.1, 0.2])


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random(1000) < 0.3
    p = rng.random(1000)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)
