"""The embedded synthetic feature store's parameters (``synthetic:``), one kind per generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from recmtl.config.longtail import LongtailConfig
from recmtl.config.multitask import MultitaskConfig
from recmtl.config.shifts import ShiftsConfig

SyntheticKind = Literal["funnel", "sequences", "longtail", "multitask", "shifts"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the embedded synthetic impression -> click -> conversion feature store.

    ``kind``: funnel (``pipelines/synthetic/funnel.py``) or sequences (behaviour
    histories ``hist_items`` / ``hist_categories`` / ``hist_age_hours`` that a target-aware
    model can use, ``synthetic_sequences.py``; it reads the sizes, ``latent_dim``,
    ``max_history_len``, ``mean_history_len`` and ``match_strength``, not ``extra_*`` nor
    ``days``), or multitask (any number of binary tasks whose correlation and relative
    complexity are knobs, ``synthetic.multitask``; ``synthetic_multitask.py``), or shifts (a
    Hive-partitioned daily export shaped like a warehouse's, with a sudden category shift and a
    weekly conversion cycle, ``synthetic.shifts``; ``pipelines/synthetic/shifts.py``; it reads
    ``days``, ``rows_per_day``, ``row_group_size``, the sizes and ``latent_dim``).

    ``days`` > 0 switches from the train/valid/test store to a raw feature-store export, one
    file per day (``<data.root>/raw/day-NNNN.parquet``, ``rows_per_day`` rows each; the
    ``*_rows`` and ``rows_per_file`` keys are then unused), from the same latent-factor model
    with a catalogue and tastes that move (``pipelines/synthetic/days.py``):

    - ``new_items_per_day``: items born each day with fresh ids, as a fraction of
      ``num_items`` (the initial catalogue, itself born over the ``1 / new_items_per_day``
      days before day 0 at that rate).
    - ``item_half_life_days``: an item's draw weight halves every this many days of its age,
      so old items fade; with steady births, items born today draw about
      ``1 - 0.5 ** (1 / item_half_life_days)`` of the impressions (0.21 at 3 days).
    - ``new_users_per_day``: users who join each day with fresh ids, a fraction of
      ``num_users``.
    - ``drift``: the share of the variance of user tastes (segment centres and each user's
      own part of the latent vector) and of item quality renewed each day, an AR(1) walk that
      keeps their spread: tastes correlate ``(1 - drift) ** (k / 2)`` across k days.
    - ``popularity_drift``: the daily step (standard deviation) of a random walk of each
      item's log draw weight, mean-one so that it moves popularity without inflating it.
    """

    kind: SyntheticKind = "funnel"
    train_rows: int = 2_000_000
    valid_rows: int = 100_000
    test_rows: int = 100_000
    rows_per_file: int = 250_000
    row_group_size: int = 32_768
    num_users: int = 100_000
    num_items: int = 50_000
    num_categories: int = 200
    num_segments: int = 64
    latent_dim: int = 8
    extra_sparse: tuple[int, ...] = ()  # cardinalities of extra context ids ctx_0, ctx_1, ...
    extra_dense: int = 0  # extra dense columns dense_0, dense_1, ... (carry no signal)
    days: int = 0
    rows_per_day: int = 200_000
    new_items_per_day: float = 0.05
    item_half_life_days: float = 3.0
    new_users_per_day: float = 0.02
    drift: float = 0.1
    popularity_drift: float = 0.3
    max_history_len: int = 50
    mean_history_len: float = 20.0
    match_strength: float = 4.0
    longtail: LongtailConfig = field(default_factory=LongtailConfig)  # kind: longtail
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)  # kind: multitask
    shifts: ShiftsConfig = field(default_factory=ShiftsConfig)  # kind: shifts
