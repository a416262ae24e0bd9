"""Knobs of the long-tailed synthetic store (``synthetic.kind: longtail``,
``pipelines/synthetic/longtail.py``): ``synthetic.longtail.*``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LongtailConfig:
    """Zipf-distributed user and item ids of a click -> conversion funnel.

    The id of rank ``r`` (ranks shuffled over the id space) is drawn with probability
    proportional to ``r ** -exponent``, so with ``synthetic.num_users`` / ``num_items`` large
    most ids occur once or never. Each id carries its own click effect, drawn
    ``N(0, *_bias_scale)``, that no profile feature explains (only the id embedding can learn
    it); ``popularity_effect`` adds that much click logit per standard deviation of an item's
    log draw weight (popular items are clicked more, as in most logs).

    - ``user_exponent``, ``item_exponent``: Zipf exponents (> 0).
    - ``user_bias_scale``, ``item_bias_scale``: standard deviation of the per-id effects (>= 0).
    - ``popularity_effect``: click logit per standard deviation of log popularity.
    """

    user_exponent: float = 1.05
    item_exponent: float = 1.1
    user_bias_scale: float = 0.5
    item_bias_scale: float = 0.6
    popularity_effect: float = 0.3

    def check(self, fail: Callable[[str], None]) -> None:
        """Calls ``fail`` with a message naming the key of the first bad value."""
        for key in ("user_exponent", "item_exponent"):
            if getattr(self, key) <= 0:
                fail(f"synthetic.longtail.{key}: {getattr(self, key)} must be > 0")
        for key in ("user_bias_scale", "item_bias_scale"):
            if getattr(self, key) < 0:
                fail(f"synthetic.longtail.{key}: {getattr(self, key)} must be >= 0")
