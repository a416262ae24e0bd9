"""Calibration: predicted/observed ratio and equal-mass bins (ECE, reliability points).

Bins hold (nearly) equal row counts in score order: the first ``n % bins`` bins get one row
more. A bin edge may cut a run of tied scores; tied rows are indistinguishable to the model,
so each of them counts as the run's mean label (its positive rate), which makes the bins, and
the ECE, independent of the order of tied rows.
"""

from __future__ import annotations

import numpy as np

from recmtl.metrics.ranking import Ranking, rank


def calibration_ratio(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """``mean(p) / mean(y)``: 1 is calibrated on average; None when there are no positives."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    return None if y.sum() == 0 else float(p.mean() / y.mean())


def equal_mass_bins(r: Ranking, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin (empty bins dropped): ``(rows, sum of p, sum of y)`` as float64 arrays."""
    if r.n == 0:
        raise ValueError("calibration bins of an empty set")
    base, extra = divmod(r.n, bins)
    edges = np.r_[0, np.cumsum(base + (np.arange(bins) < extra))]
    cum_p = np.r_[0.0, np.cumsum(r.sorted_scores)][edges]
    # Labels summed up to an edge: whole runs below it, plus the run it cuts at that run's rate.
    run = np.searchsorted(r.run_start, edges, side="right") - 1
    run = np.minimum(run, len(r.run_pos) - 1)
    cum_runs = np.r_[0.0, np.cumsum(r.run_pos)]
    length = np.diff(r.run_start)[run]
    cum_y = cum_runs[run] + (edges - r.run_start[run]) * r.run_pos[run] / length
    rows = np.diff(edges).astype(np.float64)
    keep = rows > 0
    return rows[keep], np.diff(cum_p)[keep], np.diff(cum_y)[keep]


def ece_from_ranking(r: Ranking, bins: int = 10) -> float:
    rows, sum_p, sum_y = equal_mass_bins(r, bins)
    return float(np.abs(sum_p - sum_y).sum() / r.n)


def ece_equal_mass(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-mass bins by score:
    ``sum_b n_b / n * |mean p_b - mean y_b|``."""
    if len(np.asarray(probs)) == 0:
        raise ValueError("ECE of an empty set")
    return ece_from_ranking(rank(labels, probs), bins)
