"""Group AUC: the impression-weighted mean of per-group (per-user) AUC, vectorised.

Groups with a single class have no AUC; they are excluded from the mean and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupAUC:
    gauc: float | None  # None when no group has both classes
    groups_used: int
    groups_excluded: int  # single-class groups
    rows_used: int


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> GroupAUC:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if not (len(y) == len(s) == len(g)):
        raise ValueError("labels, scores and groups differ in length")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    order = np.lexsort((s, g))  # by group, then score
    y, s, g = y[order], s[order], g[order]
    n = len(y)
    group_start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    group_id = np.cumsum(np.r_[True, g[1:] != g[:-1]]) - 1
    # Runs of equal (group, score) share their average within-group rank (ties count half).
    run_start = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])])
    run_end = np.r_[run_start[1:], n]
    pos_in_group = run_start - group_start[group_id[run_start]]
    avg_rank = pos_in_group + (run_end - run_start + 1) / 2.0
    ranks = np.repeat(avg_rank, run_end - run_start)
    n_groups = len(group_start)
    size = np.bincount(group_id, minlength=n_groups).astype(np.float64)
    pos = np.bincount(group_id, weights=y, minlength=n_groups)
    neg = size - pos
    rank_sum = np.bincount(group_id, weights=ranks * y, minlength=n_groups)
    valid = (pos > 0) & (neg > 0)
    if not valid.any():
        return GroupAUC(None, 0, n_groups, 0)
    u = rank_sum[valid] - pos[valid] * (pos[valid] + 1) / 2.0
    per_group = u / (pos[valid] * neg[valid])
    weights = size[valid]
    return GroupAUC(float((per_group * weights).sum() / weights.sum()), int(valid.sum()),
                    int(n_groups - valid.sum()), int(weights.sum()))
