"""Pieces the expert-gating architectures share: a gate and a bank of batched experts, as the
model config asks for them."""

from __future__ import annotations

from torch import nn

from recmtl.config import ModelConfig
from recmtl.modules.gates import DSelectKGate, SoftmaxGate
from recmtl.modules.mlp import BatchedExperts, FeatureGate, GatedExperts


def gate(model: ModelConfig, in_features: int, num_experts: int, num_gates: int = 1) -> nn.Module:
    """``model.gate``: a softmax over the experts, or DSelect-k."""
    if model.gate == "dselect_k":
        return DSelectKGate(in_features, num_gates, num_experts, k=min(model.dselect_k, num_experts))
    return SoftmaxGate(in_features, num_gates, num_experts)


def experts(model: ModelConfig, in_features: int, count: int, home: bool = False
            ) -> nn.Module | None:
    """``count`` batched experts of ``model.expert_layers`` (None for zero); HoME's norm and
    feature gate when ``home`` and the config asks for them."""
    if count == 0:
        return None
    bank = BatchedExperts(in_features, model.expert_layers, count,
                          normalize=home and model.expert_norm)
    if home and model.feature_gate:
        return GatedExperts(bank, FeatureGate(in_features, count, model.feature_gate_rank))
    return bank


def required(module: nn.Module | None) -> nn.Module:
    """A bank the architecture cannot do without (its config guarantees a non-zero count)."""
    if module is None:
        raise ValueError("an expert bank with zero experts where at least one is needed")
    return module
