"""HoME: Hierarchy of Multi-Gate Experts (Wang et al., Kuaishou, arXiv 2408.05430).

Tasks are grouped into meta-categories (e.g. click-like and conversion-like tasks). Two levels:

- **Level 1 (groups)**: global experts ``G1`` and per-group experts ``C1_c`` read ``x``. Group c's
  representation ``h_c`` mixes ``[G1, C1_c]`` with group c's gate (the hierarchy mask: a group
  never sees another group's experts); the global representation ``h_g`` mixes every level-1
  expert with a global gate.
- **Level 2 (tasks)**: global experts ``G2`` read ``h_g``, group experts ``C2_c`` and the
  experts ``T_t`` of every task t in group c read ``h_c``. Task t's output mixes
  ``[G2, C2_c, T_t]`` with task t's gate, reading ``h_c``.

The paper's other mechanisms sit in the submodules the builder passes in and each can be
switched off: experts as ``Swish(BatchNorm(Linear))`` (``BatchedExperts(normalize=True)``), the
feature gate (``GatedExperts``), and the self-gate here. Our reading of the self-gate, which the
paper states briefly: a group's (level 1) or task's (level 2) representation also adds its own
experts weighted by an input-dependent sigmoid, ``sum_e sigmoid(w_e . in) f_e(in)``, a residual
path that does not compete with the shared experts inside the softmax, so specific experts keep
receiving gradient (the paper's "expert underfitting").
"""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.gates import mix_experts


class SelfGate(nn.Module):
    """``in [B, D_in], experts [k, B, D] -> [B, D]``: sigmoid-weighted sum of a unit's own experts."""

    def __init__(self, in_features: int, num_experts: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, num_experts)

    def forward(self, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        return torch.einsum("be,ebd->bd", torch.sigmoid(self.proj(x)), experts)


def _optional(modules: list[nn.Module | None]) -> tuple[nn.ModuleList, list[bool]]:
    return (nn.ModuleList(m if m is not None else nn.Identity() for m in modules),
            [m is not None for m in modules])


class HoME(nn.Module):
    """``[B, in_features] -> [T, B, D]``.

    Args:
        task_group: for each task, the index of its group.
        global1, global2: the global experts of level 1 and 2.
        groups1, groups2: per group its experts at level 1 and 2 (None: none).
        tasks2: per task its experts at level 2 (None: none).
        group_gates: per group one gate over ``[G1, C1_c]`` reading x.
        global_gate: one gate over ``[G1, C1_0, C1_1, ...]`` reading x.
        task_gates: per task one gate over ``[G2, C2_c, T_t]`` reading ``h_c``.
        group_self_gates, task_self_gates: ``SelfGate`` per group / task over its own experts
            (None where it has none or the self-gate is switched off).
    """

    def __init__(self, *, task_group: list[int], global1: nn.Module, groups1: list[nn.Module | None],
                 global2: nn.Module, groups2: list[nn.Module | None], tasks2: list[nn.Module | None],
                 group_gates: list[nn.Module], global_gate: nn.Module, task_gates: list[nn.Module],
                 group_self_gates: list[nn.Module | None],
                 task_self_gates: list[nn.Module | None]) -> None:
        super().__init__()
        self.task_group = list(task_group)
        self.global1, self.global2 = global1, global2
        self.groups1, self.has_groups1 = _optional(groups1)
        self.groups2, self.has_groups2 = _optional(groups2)
        self.tasks2, self.has_tasks2 = _optional(tasks2)
        self.group_gates = nn.ModuleList(group_gates)
        self.global_gate = global_gate
        self.task_gates = nn.ModuleList(task_gates)
        self.group_self_gates, self.has_group_self = _optional(group_self_gates)
        self.task_self_gates, self.has_task_self = _optional(task_self_gates)
        self.num_tasks = len(task_group)
        self.output_dim = int(global2.output_dim)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g1 = self.global1(x)
        c1 = [e(x) if has else None for e, has in zip(self.groups1, self.has_groups1, strict=True)]
        groups = []
        for c, own in enumerate(c1):
            h = mix_experts(self.group_gates[c](x), g1 if own is None else torch.cat([g1, own]))[0]
            if own is not None and self.has_group_self[c]:
                h = h + self.group_self_gates[c](x, own)
            groups.append(h)
        everything = torch.cat([g1, *[o for o in c1 if o is not None]])
        h_global = mix_experts(self.global_gate(x), everything)[0]

        g2 = self.global2(h_global)
        c2 = [e(h) if has else None
              for e, has, h in zip(self.groups2, self.has_groups2, groups, strict=True)]
        outputs = []
        for t, c in enumerate(self.task_group):
            h = groups[c]
            own = self.tasks2[t](h) if self.has_tasks2[t] else None
            experts = torch.cat([g2, *[e for e in (c2[c], own) if e is not None]])
            y = mix_experts(self.task_gates[t](h), experts)[0]
            if own is not None and self.has_task_self[t]:
                y = y + self.task_self_gates[t](h, own)
            outputs.append(y)
        return torch.stack(outputs)
