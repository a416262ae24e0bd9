"""Knobs of the shifting warehouse export (``synthetic.kind: shifts``,
``pipelines/synthetic/shifts.py``): ``synthetic.shifts.*``."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ShiftsConfig:
    """A day-partitioned export shaped like a warehouse's, whose tastes jump and cycle.

    Layout: ``<data.root>/raw/<partition_key>=<YYYY-MM-DD>/part-NNNNN.parquet``,
    ``parts_per_day`` part files and a ``_SUCCESS`` marker per day, from ``start_date`` on,
    days in ``time_zone`` (event timestamps carry that zone; a day may have 23 or 25 hours).
    ``synthetic.days`` and ``synthetic.rows_per_day`` give the window, ``synthetic.num_users``,
    ``num_items`` (the catalogue before the first day), ``num_categories`` and ``latent_dim``
    the sizes.

    - ``new_items_per_day``: items born each day (ids never seen before);
      ``new_item_share`` of each day's impressions fall on them (a Bernoulli draw per row).
    - ``shift_day``: from local midnight of that day (0-based; ``>= synthetic.days``: never),
      ``shift_categories`` categories change: the first half rise (draw weight times
      ``shift_popularity``, click logit ``+ shift_click``), the rest fall (divided, minus).
    - ``weekly_amplitude``: the conversion logit cycles over the week,
      ``amplitude * loading_c * cos(2 pi (weekday - peak_weekday) / 7)`` with a per-category
      loading around 1 (weekday continuous in local time, 0 = Monday).
    - ``null_share``: the share of rows whose ``discount_pct`` is null (no discount).
    """

    start_date: str = "2026-11-01"  # quoted in YAML (unquoted it reads as a date)
    time_zone: str = "America/New_York"
    partition_key: str = "dt"
    parts_per_day: int = 4
    new_items_per_day: int = 2000
    new_item_share: float = 0.3
    shift_day: int = 3
    shift_categories: int = 6
    shift_popularity: float = 3.0
    shift_click: float = 0.8
    weekly_amplitude: float = 0.6
    peak_weekday: float = 5.0
    null_share: float = 0.05

    def check(self, num_categories: int, days: int, fail: Callable[[str], None]) -> None:
        """Calls ``fail`` with a message naming the key of the first bad value."""
        if days < 1:
            fail("synthetic.kind: shifts writes daily partitions (synthetic.days must be >= 1)")
        try:
            dt.date.fromisoformat(self.start_date)
        except ValueError:
            fail(f"synthetic.shifts.start_date: {self.start_date!r} is not a YYYY-MM-DD date")
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            fail(f"synthetic.shifts.time_zone: {self.time_zone!r} is not an IANA time zone "
                 "(e.g. UTC, America/New_York)")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.partition_key):
            fail(f"synthetic.shifts.partition_key: {self.partition_key!r} must be a plain "
                 "column name (dt, date, day, ...)")
        for key in ("parts_per_day", "new_items_per_day"):
            if getattr(self, key) < 1:
                fail(f"synthetic.shifts.{key}: {getattr(self, key)} must be >= 1")
        for key in ("new_item_share", "null_share"):
            if not 0 <= getattr(self, key) < 1:
                fail(f"synthetic.shifts.{key}: {getattr(self, key)} must be in [0, 1)")
        if self.shift_day < 0:
            fail(f"synthetic.shifts.shift_day: {self.shift_day} must be >= 0")
        if not 0 <= self.shift_categories <= num_categories:
            fail(f"synthetic.shifts.shift_categories: {self.shift_categories} must be in "
                 f"[0, synthetic.num_categories = {num_categories}]")
        if self.shift_popularity < 1:
            fail(f"synthetic.shifts.shift_popularity: {self.shift_popularity} must be >= 1 "
                 "(rising categories are multiplied by it, falling ones divided)")
        if self.shift_click < 0 or self.weekly_amplitude < 0:
            fail("synthetic.shifts: shift_click and weekly_amplitude must be >= 0")
        if not 0 <= self.peak_weekday < 7:
            fail(f"synthetic.shifts.peak_weekday: {self.peak_weekday} must be in [0, 7)")
