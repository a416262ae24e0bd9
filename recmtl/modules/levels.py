"""A stack of expert levels that pass per-task and shared representations upwards (PLE, AdaTT).

Each level maps ``(task_inputs: T x [B, D_in], shared_input: [B, D_in])`` to
``(task_outputs: T x [B, D], shared_output: [B, D] | None)``; the last level drops the shared
output. Level 1 reads the backbone input ``x`` everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LevelStack(nn.Module):
    """``[B, in_features] -> [T, B, D]`` through ``len(levels)`` levels."""

    def __init__(self, levels: Sequence[nn.Module], num_tasks: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(levels)
        self.num_tasks = num_tasks
        self.output_dim = int(levels[-1].output_dim)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        task_inputs: list[torch.Tensor] = [x] * self.num_tasks
        shared: torch.Tensor | None = x
        for level in self.levels:
            assert shared is not None  # only the last level drops its shared output
            task_inputs, shared = level(task_inputs, shared)
        return torch.stack(task_inputs)
