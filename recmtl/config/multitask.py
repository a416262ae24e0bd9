"""Knobs of the multi-task generator (``synthetic.kind: multitask``), MultiTab-Bench style.

The generator itself is ``pipelines/synthetic/multitask.py``; its docstring has
the formulas. Validation of these keys lives here too, so ``checks.py`` calls one function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MultitaskConfig:
    """``synthetic.multitask``: the task structure of ``synthetic.kind: multitask``.

    ``num_tasks``: binary tasks ``y0, y1, ...`` with oracles ``p0, p1, ...`` (at most
    ``synthetic.latent_dim - 1``, so the task signals can be made uncorrelated by
    construction). ``correlation`` rho in [0, 1]: the share of each task's signal variance that
    comes from a part all tasks have in common; two tasks of equal complexity have signals
    correlated exactly rho. ``complexity``: per task, the share c in [0, 1] of its signal
    variance carried by user x item interactions rather than linear effects (empty: 0.5 for
    every task); tasks of different complexity correlate less, rho (sqrt((1 - c_s)(1 - c_t))
    + sqrt(c_s c_t)). ``signal_scale``: the standard deviation of each task's logit around
    ``logit(base_rate)``. ``num_dense``: dense float columns ``dense_0, ...`` (carry linear
    signal).
    """

    num_tasks: int = 3
    correlation: float = 0.5
    complexity: tuple[float, ...] = ()
    signal_scale: float = 2.0
    base_rate: float = 0.2
    num_dense: int = 4

    def task_complexity(self) -> tuple[float, ...]:
        """Each task's complexity (``complexity``, or 0.5 for every task when empty)."""
        return self.complexity or (0.5,) * self.num_tasks


def check_multitask(mt: MultitaskConfig, latent_dim: int, days: int, ids: dict[str, int],
                    fail: Callable[[str], None]) -> None:
    """Cross-field rules of ``synthetic.multitask`` for ``synthetic.kind: multitask``;
    ``ids``: the id-set sizes ``{"synthetic.num_users": ..., ...}``."""
    for key, size in ids.items():
        if size <= latent_dim:
            fail(f"{key}: {size} must exceed synthetic.latent_dim ({latent_dim}): the latent "
                 "vectors of an id set are whitened over it")
    if days:
        fail("synthetic.kind: multitask writes train/valid/test splits, not daily exports "
             "(synthetic.days must be 0)")
    if not 1 <= mt.num_tasks < latent_dim:
        fail(f"synthetic.multitask.num_tasks: {mt.num_tasks} must be in [1, latent_dim - 1 = "
             f"{latent_dim - 1}] (one shared and one own direction per task in the latent space)")
    if not 0.0 <= mt.correlation <= 1.0:
        fail(f"synthetic.multitask.correlation: {mt.correlation} must be in [0, 1]")
    if mt.complexity and len(mt.complexity) != mt.num_tasks:
        fail(f"synthetic.multitask.complexity: {len(mt.complexity)} values for "
             f"{mt.num_tasks} tasks (one per task, or empty for 0.5 each)")
    if any(not 0.0 <= c <= 1.0 for c in mt.complexity):
        fail(f"synthetic.multitask.complexity: {list(mt.complexity)} must lie in [0, 1]")
    if not 0.0 < mt.base_rate < 1.0:
        fail(f"synthetic.multitask.base_rate: {mt.base_rate} must be in (0, 1)")
    if mt.signal_scale < 0 or mt.num_dense < 0:
        fail("synthetic.multitask: signal_scale and num_dense must be >= 0")
