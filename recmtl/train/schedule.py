"""Learning-rate schedules for the dense optimizer and the fused embedding optimizers.

The factor at global step s (of S in the whole run): ``s / warmup`` during the warm-up, then
constant 1, or a linear or cosine decay from 1 to ``final_factor`` at step S. It multiplies the
base rate each parameter group had when the schedule was built (before any checkpoint
restore), so a resumed run follows the same curve. torchrec's fused optimizers read their rate
from ``param_groups`` in ``step()``, i.e. a new rate reaches the fused update one step later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from recmtl.config import ScheduleConfig


def lr_factor(schedule: ScheduleConfig, step: int, total_steps: int) -> float:
    """The multiplier of the base rate for the update made at ``step`` (0-based)."""
    if step < schedule.warmup_steps:
        return (step + 1) / schedule.warmup_steps
    if schedule.decay == "constant":
        return 1.0
    span = max(total_steps - schedule.warmup_steps - 1, 1)
    progress = min(max(step - schedule.warmup_steps, 0) / span, 1.0)
    final = schedule.final_factor
    if schedule.decay == "linear":
        return 1.0 + (final - 1.0) * progress
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LRSchedule:
    """Sets ``lr`` of each parameter group to ``base lr * factor(step)``.

    Args:
        parts: ``(schedule, param_groups)`` pairs, e.g. the dense optimizer's and the fused
            embedding optimizer's groups.
        total_steps: the run's last step + 1.
    """

    def __init__(self, parts: Sequence[tuple[ScheduleConfig, list[dict[str, Any]]]],
                 total_steps: int) -> None:
        self.parts = [(schedule, groups, [float(g["lr"]) for g in groups])
                      for schedule, groups in parts]
        self.total_steps = total_steps
        self.factors = [1.0] * len(self.parts)  # each part's factor at the last set_step

    def set_step(self, step: int) -> None:
        for i, (schedule, groups, base) in enumerate(self.parts):
            factor = self.factors[i] = lr_factor(schedule, step, self.total_steps)
            for group, lr in zip(groups, base, strict=True):
                group["lr"] = lr * factor
