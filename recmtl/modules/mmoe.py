"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

Shared experts; one gate per task mixes them: ``y_t = sum_e g_t(x)_e * f_e(x)``.
"""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.gates import mix_experts


class MMoE(nn.Module):
    """``[B, in_features] -> [T, B, output_dim]`` (one mixture per task).

    Args:
        experts: E experts, ``[B, in] -> [E, B, D]`` (``BatchedExperts`` or ``GatedExperts``).
        gate: T gates over the E experts reading the same input, ``[B, in] -> [T, B, E]``
            (``SoftmaxGate`` or ``DSelectKGate``).
    """

    def __init__(self, experts: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.experts = experts
        self.gate = gate
        self.num_tasks = int(gate.num_gates)  # type: ignore[arg-type]
        self.output_dim = int(experts.output_dim)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mix_experts(self.gate(x), self.experts(x))
