"""Shared-Bottom: one MLP shared by every task (Caruana, 1997)."""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.mlp import MLP


class SharedBottom(nn.Module):
    """``[B, in_features] -> [T, B, D]``: the same bottom representation for each of T tasks."""

    def __init__(self, bottom: MLP, num_tasks: int) -> None:
        super().__init__()
        self.bottom = bottom
        self.num_tasks = num_tasks
        self.output_dim = bottom.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bottom(x)
        return h.unsqueeze(0).expand(self.num_tasks, *h.shape)
