"""Sparse MoE: each task (or sample) runs only its router's top-k of ``num_experts`` experts."""

from __future__ import annotations

from recmtl.config import ModelConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.modules.mlp import BatchedExperts
from recmtl.modules.sparse_moe import TaskSparseMoE


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> TaskSparseMoE:
    return TaskSparseMoE(experts=BatchedExperts(inputs.width, model.expert_layers,
                                                model.num_experts),
                         in_features=inputs.width, num_tasks=len(tasks), k=model.moe_top_k,
                         routing=model.moe_routing, capacity_factor=model.moe_capacity_factor,
                         shared_router=model.moe_shared_router)


ARCH = Architecture(build, about="top moe_top_k of num_experts per task or per sample")
