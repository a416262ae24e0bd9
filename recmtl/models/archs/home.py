"""HoME (Wang et al., 2024): global, group and task experts in two levels, normalised experts,
feature gates and self-gates."""

from __future__ import annotations

from recmtl.config import ModelConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.models.parts import experts, gate
from recmtl.modules.home import HoME, SelfGate


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> HoME:
    width = inputs.width
    groups = [list(g) for g in model.task_groups] or [list(tasks)]
    task_group = [next(i for i, g in enumerate(groups) if t in g) for t in tasks]
    n_global, n_group, n_task = model.num_experts, model.group_experts, model.task_experts
    hidden = model.expert_layers[-1]

    def self_gate(width: int, count: int) -> SelfGate | None:
        return SelfGate(width, count) if model.self_gate and count else None

    return HoME(
        task_group=task_group,
        global1=experts(model, width, n_global, home=True),  # type: ignore[arg-type]
        groups1=[experts(model, width, n_group, home=True) for _ in groups],
        global2=experts(model, hidden, n_global, home=True),  # type: ignore[arg-type]
        groups2=[experts(model, hidden, n_group, home=True) for _ in groups],
        tasks2=[experts(model, hidden, n_task, home=True) for _ in tasks],
        group_gates=[gate(model, width, n_global + n_group) for _ in groups],
        global_gate=gate(model, width, n_global + n_group * len(groups)),
        task_gates=[gate(model, hidden, n_global + n_group + n_task) for _ in tasks],
        group_self_gates=[self_gate(width, n_group) for _ in groups],
        task_self_gates=[self_gate(hidden, n_task) for _ in tasks],
    )


ARCH = Architecture(build, about="global, task-group and task experts over two levels")
