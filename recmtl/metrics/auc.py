"""Exact ranking and probability metrics on numpy arrays, in float64.

AUC counts tied scores as half-correct, as ``sklearn.metrics.roc_auc_score`` does; it is the
Mann-Whitney U read off runs of tied scores in O(n log n), with no thresholds or binning.
"""

from __future__ import annotations

import numpy as np

from recmtl.metrics.ranking import Ranking, check_scores, rank


def auc_from_ranking(r: Ranking) -> float | None:
    """AUC of an already sorted task (see ``recmtl.metrics.ranking``); None with one class."""
    n_pos, n_neg = r.positives, r.negatives
    if n_pos == 0 or n_neg == 0:
        return None
    # A positive beats every negative in lower runs and ties with half of its own run's.
    neg_below = np.cumsum(r.run_neg) - r.run_neg
    u = float(np.dot(r.run_pos, neg_below + 0.5 * r.run_neg))
    return u / (n_pos * n_neg)


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve; ``None`` when only one class is present."""
    return auc_from_ranking(rank(labels, scores))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities are clipped to ``[eps, 1 - eps]`` as sklearn does."""
    y, p = check_scores(labels, probs)
    p = np.clip(p, eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
