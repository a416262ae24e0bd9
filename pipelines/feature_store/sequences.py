"""Behaviour sequences in `recmtl prepare`: list columns ordered oldest first, cut to their
``max_len`` most recent ids, with side lists checked to run beside their sequence.

The cut happens once, on the scanned export, before anything is fit or mapped, so the
vocabularies, the null counts and the training columns all see the lists the model will see.
Per split, ``stats.json`` counts the rows whose list was cut (``truncated_to_max_len/<f>``) and
the empty or null lists (``empty_sequences/<f>``: a user without history is length 0).
"""

from __future__ import annotations

import polars as pl

from pipelines.feature_store.spec import PrepareSpec, SparseSpec

_CUT = "__cut:"


def sequences(spec: PrepareSpec) -> list[SparseSpec]:
    return [f for f in spec.sparse if f.max_len is not None]


def alignment_checks(spec: PrepareSpec) -> dict[str, tuple[pl.Expr, str]]:
    """For ``check_values``: rows where a side list's length differs from its sequence's."""
    by_name = {f.name: f for f in spec.sparse}
    checks = {}
    for f in spec.sparse:
        if f.aligned_with is None:
            continue
        other = by_name[f.aligned_with]
        differs = (pl.col(f.source).list.len().fill_null(0)
                   != pl.col(other.source).list.len().fill_null(0))
        checks[f"aligned:{f.source}"] = (differs, f"lists as long as {other.source!r}'s in every "
                                                  f"row (aligned_with: {other.name})")
    return checks


def cut(frame: pl.LazyFrame, spec: PrepareSpec) -> pl.LazyFrame:
    """Keeps each sequence column's ``max_len`` last ids; marks the rows it cut."""
    columns = {f.source: f.max_len for f in sequences(spec)}
    if not columns:
        return frame
    marks = [(pl.col(c).list.len() > n).fill_null(False).alias(_CUT + c)
             for c, n in columns.items()]
    return frame.with_columns(marks).with_columns(
        [pl.col(c).list.tail(n) for c, n in columns.items()])  # type: ignore[arg-type]


def count_exprs(spec: PrepareSpec) -> list[pl.Expr]:
    """Per-split counts for ``split_counts``: ``truncated:<f>`` and ``empty:<f>``."""
    exprs = []
    for f in sequences(spec):
        exprs.append(pl.col(_CUT + f.source).sum().alias(f"truncated:{f.name}"))
        exprs.append((pl.col(f.source).list.len().fill_null(0) == 0).sum()
                     .alias(f"empty:{f.name}"))
    return exprs


def policy_counts(spec: PrepareSpec, counts: dict[str, int]) -> dict[str, int]:
    out = {}
    for f in sequences(spec):
        if counts.get(f"truncated:{f.name}"):
            out[f"truncated_to_max_len/{f.name}"] = counts[f"truncated:{f.name}"]
        if counts.get(f"empty:{f.name}"):
            out[f"empty_sequences/{f.name}"] = counts[f"empty:{f.name}"]
    return out
