"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

Shared experts; one softmax gate per task mixes them: ``y_t = sum_e g_t(x)_e * f_e(x)``.
"""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.mlp import BatchedExperts


class MMoE(nn.Module):
    """``[B, in_features] -> [T, B, output_dim]`` (one mixture per task).

    Args:
        experts: E experts returning ``[E, B, D]``.
        in_features: input width (the gates read the same input as the experts).
        num_tasks: T, one gate each.
    """

    def __init__(self, experts: BatchedExperts, in_features: int, num_tasks: int) -> None:
        super().__init__()
        self.experts = experts
        self.gates = nn.Linear(in_features, num_tasks * experts.num_experts)
        self.num_tasks = num_tasks
        self.output_dim = experts.output_dim

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax gate per task: ``[T, B, E]``."""
        logits = self.gates(x).view(x.shape[0], self.num_tasks, self.experts.num_experts)
        return torch.softmax(logits, dim=-1).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expert_out = self.experts(x)  # [E, B, D]
        gates = self.gate_weights(x)  # [T, B, E]
        return torch.einsum("tbe,ebd->tbd", gates, expert_out)
