"""Curves for the report: ROC points, reliability bins, score histograms and normalised
entropy. numpy only, float64; the ``*_from_ranking`` forms reuse one sort per task."""

from __future__ import annotations

import numpy as np

from recmtl.metrics.calibration import equal_mass_bins
from recmtl.metrics.ranking import Ranking, rank


def roc_from_ranking(r: Ranking, max_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    # Thresholds run from the highest score down: one point after each run of tied scores.
    tps = np.cumsum(r.run_pos[::-1])
    fps = np.cumsum(r.run_neg[::-1])
    tpr = np.r_[0.0, tps / max(tps[-1], 1)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def roc_points(labels: np.ndarray, scores: np.ndarray, max_points: int = 200
               ) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct score threshold, thinned to at most ``max_points`` (the
    first and last kept); the same points as ``sklearn.metrics.roc_curve`` before thinning."""
    return roc_from_ranking(rank(labels, scores), max_points)


def reliability_from_ranking(r: Ranking, bins: int = 10) -> list[dict[str, float]]:
    rows, sum_p, sum_y = equal_mass_bins(r, bins)
    return [{"predicted": float(p / n), "observed": float(y / n), "rows": int(n)}
            for n, p, y in zip(rows, sum_p, sum_y, strict=True)]


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10
                     ) -> list[dict[str, float]]:
    """Equal-mass bins by score: mean predicted, observed rate and row count per bin (the bins
    of ``recmtl.metrics.calibration``, so they reproduce its ECE)."""
    return reliability_from_ranking(rank(labels, probs), bins)


def entropy_of_rate(rate: float) -> float | None:
    """Logloss of always predicting ``rate``; None when one class is absent."""
    if rate <= 0.0 or rate >= 1.0:
        return None
    return float(-(rate * np.log(rate) + (1 - rate) * np.log1p(-rate)))


def normalized_entropy(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float | None:
    """Logloss divided by the entropy of the base rate (He et al., 2014): < 1 beats predicting
    the average; None when one class is absent."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    base = entropy_of_rate(float(y.mean()))
    if base is None:
        return None
    logloss = -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean()
    return float(logloss / base)


def histogram(probs: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    """Row counts over ``bins`` equal-width bins of [0, 1]: ``numpy.histogram``'s bins."""
    counts, edges = np.histogram(np.asarray(probs, dtype=np.float64), bins=bins, range=(0, 1))
    return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}


def histogram_from_ranking(r: Ranking, bins: int = 20) -> dict[str, list[float]]:
    """``histogram`` read off the sorted scores: bins are ``[lo, hi)``, the last ``[lo, 1]``."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    at = np.searchsorted(r.sorted_scores, edges, side="left")
    at[-1] = np.searchsorted(r.sorted_scores, 1.0, side="right")
    return {"edges": edges.tolist(), "counts": np.diff(at).astype(float).tolist()}
