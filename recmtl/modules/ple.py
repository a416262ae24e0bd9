"""Progressive Layered Extraction (Tang et al., RecSys 2020): stacked CGC levels.

At each level, task t mixes its own experts and the shared experts with its gate; at inner
levels a shared gate mixes every expert into the input of the next level's shared experts.
Level 1 reads ``x`` everywhere; level l > 1 reads task t's and the shared output of level l - 1.
With one level and no task-specific experts, a CGC is exactly an MMoE.
"""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.gates import mix_experts
from recmtl.modules.levels import LevelStack


class CGCLevel(nn.Module):
    """One Customized Gate Control level.

    Args:
        task_experts: one expert module per task, ``[B, in] -> [k_t, B, D]`` (None: no experts).
        shared_experts: experts shared by all tasks, ``[E_s, B, D]``.
        task_gates: per task one gate (``num_gates=1``) over its ``k_t + E_s`` experts.
        shared_gate: one gate over every expert of the level (None on the last level).
    """

    def __init__(self, task_experts: list[nn.Module | None], shared_experts: nn.Module,
                 task_gates: list[nn.Module], shared_gate: nn.Module | None) -> None:
        super().__init__()
        self.task_experts = nn.ModuleList(e if e is not None else nn.Identity() for e in task_experts)
        self.task_counts = [0 if e is None else int(e.num_experts)  # type: ignore[arg-type]
                            for e in task_experts]
        self.shared_experts = shared_experts
        self.gates = nn.ModuleList(task_gates)
        self.shared_gate = shared_gate
        self.output_dim = int(shared_experts.output_dim)  # type: ignore[arg-type]

    def forward(self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        shared = self.shared_experts(shared_input)  # [E_s, B, D]
        own = [e(x) for e, x, k in zip(self.task_experts, task_inputs, self.task_counts, strict=True)
               if k]
        outputs, own_iter = [], iter(own)
        for t, (gate, k) in enumerate(zip(self.gates, self.task_counts, strict=True)):
            experts = torch.cat([next(own_iter), shared]) if k else shared
            outputs.append(mix_experts(gate(task_inputs[t]), experts)[0])
        shared_out = None
        if self.shared_gate is not None:
            shared_out = mix_experts(self.shared_gate(shared_input), torch.cat([*own, shared]))[0]
        return outputs, shared_out


class PLE(LevelStack):
    """``[B, in_features] -> [T, B, D]`` through ``len(levels)`` CGC levels."""
