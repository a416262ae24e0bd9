"""AdaTT (Li et al., KDD 2023): task-owned experts fused across tasks by adaptive gates."""

from __future__ import annotations

from recmtl.config import ModelConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.models.parts import experts, gate
from recmtl.modules.adatt import AdaTT, AdaTTLevel


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> AdaTT:
    levels, width = [], inputs.width
    k, shared_count = max(1, model.task_experts), model.num_experts
    total = len(tasks) * k + shared_count
    for level in range(model.num_levels):
        own = [experts(model, width, k) for _ in tasks]
        inner = level < model.num_levels - 1
        levels.append(AdaTTLevel(
            own, experts(model, width, shared_count),  # type: ignore[arg-type]
            [gate(model, width, total) for _ in tasks],
            gate(model, width, total) if inner else None, residual=model.adatt_residual))
        width = model.expert_layers[-1]
    return AdaTT(levels, len(tasks))


ARCH = Architecture(build, about="each task's experts fused with every other task's")
