"""Progressive Layered Extraction (Tang et al., RecSys 2020): stacked CGC levels.

At each level, task t mixes its own experts and the shared experts with its gate; at inner
levels a shared gate mixes every expert into the input of the next level's shared experts.
Level 1 reads ``x`` everywhere; level l > 1 reads task t's and the shared output of level l - 1.
With one level and no task-specific experts, a CGC is exactly an MMoE.
"""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.mlp import BatchedExperts


class CGCLevel(nn.Module):
    """One Customized Gate Control level.

    Args:
        task_experts: one ``BatchedExperts`` per task (may hold zero experts: pass None).
        shared_experts: experts shared by all tasks, ``[E_s, B, D]``.
        in_features: width of this level's inputs.
        with_shared_gate: also produce the shared output (every level but the last).
    """

    def __init__(self, task_experts: list[BatchedExperts | None], shared_experts: BatchedExperts,
                 in_features: int, with_shared_gate: bool) -> None:
        super().__init__()
        self.task_experts = nn.ModuleList(e if e is not None else nn.Identity() for e in task_experts)
        self.task_counts = [0 if e is None else e.num_experts for e in task_experts]
        self.shared_experts = shared_experts
        n_shared = shared_experts.num_experts
        self.gates = nn.ModuleList(nn.Linear(in_features, k + n_shared) for k in self.task_counts)
        self.shared_gate = (nn.Linear(in_features, sum(self.task_counts) + n_shared)
                            if with_shared_gate else None)
        self.output_dim = shared_experts.output_dim

    def forward(self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        shared = self.shared_experts(shared_input)  # [E_s, B, D]
        own = [e(x) for e, x, k in zip(self.task_experts, task_inputs, self.task_counts, strict=True)
               if k]
        outputs, own_iter = [], iter(own)
        for t, (gate, k) in enumerate(zip(self.gates, self.task_counts, strict=True)):
            experts = torch.cat([next(own_iter), shared]) if k else shared
            weights = torch.softmax(gate(task_inputs[t]), dim=-1)  # [B, k + E_s]
            outputs.append(torch.einsum("be,ebd->bd", weights, experts))
        shared_out = None
        if self.shared_gate is not None:
            everything = torch.cat([*own, shared])
            weights = torch.softmax(self.shared_gate(shared_input), dim=-1)
            shared_out = torch.einsum("be,ebd->bd", weights, everything)
        return outputs, shared_out


class PLE(nn.Module):
    """``[B, in_features] -> [T, B, D]`` through ``len(levels)`` CGC levels."""

    def __init__(self, levels: list[CGCLevel], num_tasks: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(levels)
        self.num_tasks = num_tasks
        self.output_dim = levels[-1].output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        task_inputs: list[torch.Tensor] = [x] * self.num_tasks
        shared: torch.Tensor | None = x
        for level in self.levels:
            assert shared is not None  # only the last level drops its shared output
            task_inputs, shared = level(task_inputs, shared)
        return torch.stack(task_inputs)
