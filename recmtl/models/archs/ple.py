"""PLE (Tang et al., RecSys 2020): levels of shared and task-owned experts (CGC)."""

from __future__ import annotations

from recmtl.config import ModelConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.models.parts import experts, gate, required
from recmtl.modules.ple import PLE, CGCLevel


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> PLE:
    levels, width = [], inputs.width
    k, shared_count = model.task_experts, model.num_experts
    for level in range(model.num_levels):
        shared = required(experts(model, width, shared_count))
        inner = level < model.num_levels - 1
        levels.append(CGCLevel(
            [experts(model, width, k) for _ in tasks], shared,
            [gate(model, width, k + shared_count) for _ in tasks],
            gate(model, width, len(tasks) * k + shared_count) if inner else None))
        width = int(shared.output_dim)  # type: ignore[arg-type]
    return PLE(levels, len(tasks))


ARCH = Architecture(build, about="num_levels of task_experts per task beside num_experts shared")
