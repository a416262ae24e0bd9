"""MMoE (Ma et al., KDD 2018): shared experts, one softmax (or DSelect-k) gate per task."""

from __future__ import annotations

from recmtl.config import ModelConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.models.parts import experts, gate, required
from recmtl.modules.mmoe import MMoE


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> MMoE:
    bank = required(experts(model, inputs.width, model.num_experts))
    return MMoE(bank, gate(model, inputs.width, model.num_experts, num_gates=len(tasks)))


ARCH = Architecture(build, about="num_experts shared experts, a gate per task")
