"""AdaTT: Adaptive Task-to-Task fusion (Li et al., KDD 2023), the variant with shared experts.

Per level every task has its own experts and there are shared experts. Task t's fusion unit
mixes **all** experts of the level (every task's and the shared ones) with a gate reading task
t's input, plus a residual: a learned, input-independent linear combination of task t's own
experts. A shared fusion unit mixes all experts for the next level's shared experts. Unlike
PLE's CGC, a task's gate can draw on other tasks' experts directly.
"""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.gates import mix_experts
from recmtl.modules.levels import LevelStack


class AdaTTLevel(nn.Module):
    """One fusion level: ``(T x [B, D_in], [B, D_in]) -> (T x [B, D], [B, D] | None)``.

    Args:
        task_experts: per task ``[B, in] -> [k, B, D]`` (k >= 1, the same for every task).
        shared_experts: ``[E_s, B, D]`` (None: no shared experts).
        task_gates: per task one gate over the ``T * k + E_s`` experts.
        shared_gate: one gate over all experts (None on the last level).
        residual: add the task's own experts, combined with learned weights (initialised 1/k).
    """

    def __init__(self, task_experts: list[nn.Module], shared_experts: nn.Module | None,
                 task_gates: list[nn.Module], shared_gate: nn.Module | None, residual: bool) -> None:
        super().__init__()
        self.task_experts = nn.ModuleList(task_experts)
        self.shared_experts = shared_experts
        self.gates = nn.ModuleList(task_gates)
        self.shared_gate = shared_gate
        k = int(task_experts[0].num_experts)  # type: ignore[arg-type]
        self.residual = (nn.Parameter(torch.full((len(task_experts), k), 1.0 / k))
                         if residual else None)
        self.output_dim = int(task_experts[0].output_dim)  # type: ignore[arg-type]

    def forward(self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        own = [e(x) for e, x in zip(self.task_experts, task_inputs, strict=True)]  # T x [k, B, D]
        parts = own if self.shared_experts is None else [*own, self.shared_experts(shared_input)]
        everything = torch.cat(parts)
        outputs = []
        for t, gate in enumerate(self.gates):
            y = mix_experts(gate(task_inputs[t]), everything)[0]
            if self.residual is not None:
                y = y + torch.einsum("k,kbd->bd", self.residual[t], own[t])
            outputs.append(y)
        shared_out = None
        if self.shared_gate is not None:
            shared_out = mix_experts(self.shared_gate(shared_input), everything)[0]
        return outputs, shared_out


class AdaTT(LevelStack):
    """``[B, in_features] -> [T, B, D]`` through ``len(levels)`` AdaTT fusion levels."""
