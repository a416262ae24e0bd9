"""Config -> ``MultiTaskRanker``. One explicit table of architectures; nothing else reads config."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from recmtl.config import Config, ModelConfig
from recmtl.modules.interaction import DotInteraction
from recmtl.modules.mlp import MLP, BatchedExperts
from recmtl.modules.mmoe import MMoE
from recmtl.modules.ple import PLE, CGCLevel
from recmtl.modules.ranker import DenseRanker, MultiTaskRanker
from recmtl.modules.shared_bottom import SharedBottom

_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def _mmoe(model: ModelConfig, in_features: int, num_tasks: int) -> MMoE:
    experts = BatchedExperts(in_features, model.expert_layers, model.num_experts)
    return MMoE(experts, in_features, num_tasks)


def _shared_bottom(model: ModelConfig, in_features: int, num_tasks: int) -> SharedBottom:
    return SharedBottom(MLP(in_features, model.expert_layers), num_tasks)


def _ple(model: ModelConfig, in_features: int, num_tasks: int) -> PLE:
    levels, width = [], in_features
    for level in range(model.num_levels):
        task_experts = [BatchedExperts(width, model.expert_layers, model.task_experts)
                        if model.task_experts else None for _ in range(num_tasks)]
        shared = BatchedExperts(width, model.expert_layers, model.num_experts)
        levels.append(CGCLevel(task_experts, shared, width,
                               with_shared_gate=level < model.num_levels - 1))
        width = shared.output_dim
    return PLE(levels, num_tasks)


BACKBONES: dict[str, Callable[[ModelConfig, int, int], nn.Module]] = {
    "shared_bottom": _shared_bottom,
    "mmoe": _mmoe,
    "ple": _ple,
}


def embedding_configs(cfg: Config) -> list[EmbeddingBagConfig]:
    """One torchrec table per configured table, fed by every feature that names it."""
    return [
        EmbeddingBagConfig(
            name=t.name,
            embedding_dim=t.dim,
            num_embeddings=t.num_embeddings,
            feature_names=[f.name for f in cfg.features.sparse if f.table == t.name],
            pooling=_POOLING[t.pooling],
        )
        for t in cfg.features.tables
        if any(f.table == t.name for f in cfg.features.sparse)
    ]


def pooled_width(cfg: Config) -> int:
    dims = {t.name: t.dim for t in cfg.features.tables}
    return sum(dims[f.table] for f in cfg.features.sparse)


def build_interaction(cfg: Config) -> nn.Module:
    if cfg.model.interaction == "none":
        return nn.Identity()
    dims = {t.name: t.dim for t in cfg.features.tables}
    return DotInteraction(len(cfg.features.sparse), dims[cfg.features.sparse[0].table])


def build_dense_ranker(cfg: Config) -> DenseRanker:
    tasks = cfg.base_tasks()
    interaction = build_interaction(cfg)
    in_features = int(getattr(interaction, "output_dim", pooled_width(cfg))) + len(cfg.features.dense)
    backbone = BACKBONES[cfg.model.arch](cfg.model, in_features, len(tasks))
    width = int(backbone.output_dim)  # type: ignore[arg-type]
    towers = [MLP(width, cfg.model.tower_layers) for _ in tasks]
    return DenseRanker(interaction, backbone, towers, tasks)


def build_model(cfg: Config, embedding_device: str | torch.device = "cpu",
                seed: int | None = None) -> MultiTaskRanker:
    """The full model. ``embedding_device="meta"`` leaves tables unallocated for DMP to shard.

    Dense weights are drawn from ``seed`` (default ``cfg.seed``), so every rank starts equal.
    """
    torch.manual_seed(cfg.seed if seed is None else seed)
    dense_ranker = build_dense_ranker(cfg)
    embeddings = EmbeddingBagCollection(tables=embedding_configs(cfg),
                                        device=torch.device(embedding_device))
    return MultiTaskRanker(embeddings, dense_ranker, [f.name for f in cfg.features.sparse])
