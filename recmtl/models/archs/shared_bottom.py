"""Shared-Bottom (Caruana 1997): one MLP every task reads."""

from __future__ import annotations

from recmtl.config import ModelConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.modules.mlp import MLP
from recmtl.modules.shared_bottom import SharedBottom


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> SharedBottom:
    return SharedBottom(MLP(inputs.width, model.expert_layers), len(tasks))


ARCH = Architecture(build, about="one MLP of expert_layers shared by every task")
