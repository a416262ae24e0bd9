"""Group AUC: the impression-weighted mean of per-group (per-user) AUC, vectorised.

Groups with a single class have no AUC; they are excluded from the mean and counted. The
per-group AUCs come from one sort by (group, score) (see ``per_group_auc``); the same routine
gives per-slice AUCs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recmtl.metrics.ranking import Ranking, check_scores, rank


@dataclass(frozen=True)
class GroupAUC:
    gauc: float | None  # None when no group has both classes
    groups_used: int
    groups_excluded: int  # single-class groups
    rows_used: int


@dataclass(frozen=True)
class PerGroup:
    """Per group present in the data, ascending by code: rows, positives and AUC (NaN when
    the group has one class)."""

    codes: np.ndarray  # [G] int64
    rows: np.ndarray  # [G] int64
    positives: np.ndarray  # [G] float64
    auc: np.ndarray  # [G] float64


def group_codes(groups: np.ndarray) -> np.ndarray:
    """``[n]`` non-negative int64 codes with one code per distinct group. Integer-valued ids
    (also as floats, as ``recmtl.predict`` returns them) are used as they are, which skips a
    sort; anything else is factorised."""
    g = np.asarray(groups).ravel()
    if len(g) and np.issubdtype(g.dtype, np.number):
        lo, hi = g.min(), g.max()
        if lo >= 0 and hi < 2**52 and (np.issubdtype(g.dtype, np.integer)
                                       or bool(np.all(g == np.floor(g)))):
            return g.astype(np.int64)
    return np.unique(g, return_inverse=True)[1].astype(np.int64).ravel()


def per_group_auc(labels: np.ndarray, r: Ranking, codes: np.ndarray) -> PerGroup:
    """AUC within each group of ``codes`` (``[n]``, non-negative int64) for the ranked task.

    Rows are sorted by (group, score) once. With float32 scores and codes below 2**31 that
    is one uint64 value sort of ``code << 33 | score key << 1 | label``; otherwise an index
    sort of ``code * T + score rank``.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    codes = np.asarray(codes, dtype=np.int64).ravel()
    keys = r.keys
    if keys is not None and (len(codes) == 0 or int(codes.max()) < 2**31):
        packed = codes.astype(np.uint64) << np.uint64(33)
        packed |= keys << np.uint64(1)
        packed |= y.astype(np.uint64)
        packed.sort()
        return _grouped_auc(packed >> np.uint64(33), packed >> np.uint64(1), packed & np.uint64(1))
    n_runs = max(len(r.run_pos), 1)
    uniq = None
    if len(codes) and int(codes.max()) >= (2**62) // n_runs:  # the key would overflow
        uniq, inverse = np.unique(codes, return_inverse=True)
        codes = inverse.ravel().astype(np.int64)
    key = codes * n_runs + r.dense_rank()
    order = np.argsort(key)
    key = key[order]
    per = _grouped_auc(key // n_runs, key, y[order])
    return per if uniq is None else PerGroup(uniq[per.codes], per.rows, per.positives, per.auc)


def _grouped_auc(group: np.ndarray, tie: np.ndarray, ys: np.ndarray) -> PerGroup:
    """Per-group AUC from rows sorted by (group, score): ``group`` codes, ``tie`` equal
    exactly for rows of one group with equal scores, ``ys`` labels (0/1, any number type)."""
    n = len(ys)
    new_run = np.empty(n, dtype=bool)
    new_run[:1] = True
    np.not_equal(tie[1:], tie[:-1], out=new_run[1:])
    run_start = np.flatnonzero(new_run)
    # A group starts where its first run starts: compare groups at run starts only.
    run_code = group[run_start]
    new_group = np.r_[True, run_code[1:] != run_code[:-1]] if len(run_start) else new_run[:0]
    first_run = np.flatnonzero(new_group)
    run_group = np.cumsum(new_group) - 1
    run_size = np.diff(np.r_[run_start, n])
    run_pos = np.add.reduceat(ys, run_start).astype(np.float64) if n else np.zeros(0)
    run_neg = run_size - run_pos
    # Negatives below a run within its group: the running total minus the group's start.
    neg_before = np.cumsum(run_neg) - run_neg
    neg_below = neg_before - neg_before[first_run][run_group]
    n_groups = len(first_run)
    u = np.bincount(run_group, weights=run_pos * (neg_below + 0.5 * run_neg), minlength=n_groups)
    size = np.bincount(run_group, weights=run_size, minlength=n_groups).astype(np.int64)
    pos = np.bincount(run_group, weights=run_pos, minlength=n_groups)
    neg = size - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)
    return PerGroup(run_code[first_run].astype(np.int64), size, pos, auc)


def gauc_from_ranking(labels: np.ndarray, r: Ranking, codes: np.ndarray) -> GroupAUC:
    per = per_group_auc(labels, r, codes)
    valid = ~np.isnan(per.auc)
    if not valid.any():
        return GroupAUC(None, 0, len(per.rows), 0)
    weights = per.rows[valid].astype(np.float64)
    return GroupAUC(float((per.auc[valid] * weights).sum() / weights.sum()), int(valid.sum()),
                    int(len(per.rows) - valid.sum()), int(weights.sum()))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> GroupAUC:
    y, s = check_scores(labels, scores)
    if len(np.asarray(groups).ravel()) != len(y):
        raise ValueError("labels, scores and groups differ in length")
    return gauc_from_ranking(y, rank(y, s), group_codes(groups))
