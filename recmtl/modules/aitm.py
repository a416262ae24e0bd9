"""AITM: Adaptive Information Transfer Multi-task (Xi et al., KDD 2021).

For tasks on a sequential funnel (impression -> click -> purchase), each task's tower output
``q_t`` is combined with information transferred from the previous task: ``p = g(z_{t-1})``
(a learned transfer), then an attention over the two candidates ``u in (p, q_t)``:
``w_u = softmax(<h1(u), h2(u)> / sqrt(D))`` and ``z_t = sum_u w_u h3(u)``. The first task's
``z_1 = q_1``. Heads read ``z_t``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AITMTransfer(nn.Module):
    """``T x [B, D] -> T x [B, D]`` along the task order."""

    def __init__(self, dim: int, num_tasks: int) -> None:
        super().__init__()
        n = num_tasks - 1
        self.transfer = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) for _ in range(n))
        self.query = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n))
        self.key = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n))
        self.value = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n))
        self.scale = 1.0 / math.sqrt(dim)
        self.output_dim = dim

    def forward(self, towers: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [towers[0]]
        for i in range(len(towers) - 1):
            u = torch.stack([self.transfer[i](out[-1]), towers[i + 1]], dim=1)  # [B, 2, D]
            w = torch.softmax((self.query[i](u) * self.key[i](u)).sum(-1) * self.scale, dim=1)
            out.append((w.unsqueeze(-1) * self.value[i](u)).sum(1))
        return out
