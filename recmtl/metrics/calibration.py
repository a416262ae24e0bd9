"""Calibration: predicted/observed ratio and expected calibration error on equal-mass bins."""

from __future__ import annotations

import numpy as np


def calibration_ratio(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """``mean(p) / mean(y)``: 1 is calibrated on average; None when there are no positives."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    return None if y.sum() == 0 else float(p.mean() / y.mean())


def ece_equal_mass(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` bins of (nearly) equal row count, by score order:
    ``sum_b n_b / n * |mean p_b - mean y_b|``."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if len(p) == 0:
        raise ValueError("ECE of an empty set")
    order = np.argsort(p, kind="mergesort")
    # Bin b holds sorted rows [edges[b], edges[b + 1]); the first len % bins bins get one more.
    base, extra = divmod(len(p), bins)
    edges = np.r_[0, np.cumsum(base + (np.arange(bins) < extra))]
    cum_p = np.r_[0.0, np.cumsum(p[order])]
    cum_y = np.r_[0.0, np.cumsum(y[order])]
    gap = np.abs((cum_p[edges[1:]] - cum_p[edges[:-1]]) - (cum_y[edges[1:]] - cum_y[edges[:-1]]))
    return float(gap.sum() / len(p))
