"""Curves and intervals for the report: ROC points, reliability bins, score histograms,
normalised entropy and a bootstrap interval for AUC. numpy only, float64."""

from __future__ import annotations

import numpy as np

from recmtl.metrics.auc import auc


def roc_points(labels: np.ndarray, scores: np.ndarray, max_points: int = 200
               ) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct score threshold, thinned to at most ``max_points`` (the
    first and last kept); the same points as ``sklearn.metrics.roc_curve`` before thinning."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10
                     ) -> list[dict[str, float]]:
    """Equal-mass bins by score: mean predicted, observed rate and row count per bin."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    return [{"predicted": float(p[b].mean()), "observed": float(y[b].mean()), "rows": len(b)}
            for b in np.array_split(order, bins) if len(b)]


def normalized_entropy(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float | None:
    """Logloss divided by the entropy of the base rate (He et al., 2014): < 1 beats predicting
    the average; None when one class is absent."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    rate = y.mean()
    if rate in (0.0, 1.0):
        return None
    logloss = -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean()
    return float(logloss / -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate)))


def auc_interval(labels: np.ndarray, scores: np.ndarray, resamples: int = 200, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of AUC over rows resampled with replacement."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if resamples <= 0 or len(y) == 0 or y.min() == y.max():
        return None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), size=len(y))
        value = auc(y[idx], s[idx])
        if value is not None:
            draws.append(value)
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def histogram(probs: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    counts, edges = np.histogram(np.asarray(probs, dtype=np.float64), bins=bins, range=(0, 1))
    return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}
