"""Config -> ``MultiTaskRanker``: the feature layer (``features.py``), the backbone its
``model.arch`` names in the registry (``registry.py``), one tower per task. Nothing else
reads config to make modules, and nothing here names an architecture."""

from __future__ import annotations

import torch
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from recmtl.config import Config
from recmtl.losses import imputation_output
from recmtl.models.features import (
    architecture,
    backbone_inputs,
    build_interaction,
    build_managed_ids,
    build_numeric_encoder,
    build_sequence_features,
    embedding_configs,
    sequence_embedding_configs,
)
from recmtl.modules.aitm import AITMTransfer
from recmtl.modules.mlp import MLP
from recmtl.modules.ranker import DenseRanker, MultiTaskRanker


def build_dense_ranker(cfg: Config, numeric_edges: list[list[float]] | None = None) -> DenseRanker:
    """The dense part: interaction, numeric encoding, backbone, towers (and AITM, aux heads)."""
    tasks = cfg.base_tasks()
    interaction = build_interaction(cfg)
    numeric = build_numeric_encoder(cfg, numeric_edges)
    dense_width = int(numeric.output_dim) if numeric is not None else len(cfg.features.dense)  # type: ignore[arg-type]
    backbone = architecture(cfg).build(cfg.model, backbone_inputs(cfg, interaction, dense_width),
                                       tasks)
    width = int(backbone.output_dim)  # type: ignore[arg-type]
    towers = [MLP(width, cfg.model.tower_layers) for _ in tasks]
    transfer = (AITMTransfer(towers[0].output_dim, len(tasks))
                if cfg.model.transfer == "aitm" else None)
    aux = {imputation_output(t.name): t.name for t in cfg.tasks if t.escm2 == "dr"}
    return DenseRanker(interaction, backbone, towers, tasks, transfer=transfer, aux_outputs=aux,
                       dense_encoder=numeric)


def build_model(cfg: Config, embedding_device: str | torch.device = "cpu",
                seed: int | None = None,
                numeric_edges: list[list[float]] | None = None) -> MultiTaskRanker:
    """The full model. ``embedding_device="meta"`` leaves tables unallocated for DMP to shard.

    Dense weights are drawn from ``seed`` (default ``cfg.seed``), so every rank starts equal.
    ``numeric_edges``: see ``features.build_numeric_encoder``.
    """
    torch.manual_seed(cfg.seed if seed is None else seed)
    dense_ranker = build_dense_ranker(cfg, numeric_edges)
    bags, unpooled = embedding_configs(cfg), sequence_embedding_configs(cfg)
    device = torch.device(embedding_device)
    embeddings = EmbeddingBagCollection(tables=bags, device=device) if bags else None
    sequence_embeddings = EmbeddingCollection(tables=unpooled, device=device) if unpooled else None
    log_vars = len(cfg.tasks) if cfg.loss.weighting == "uncertainty" else 0
    return MultiTaskRanker(embeddings, dense_ranker, [f.name for f in cfg.features.sparse],
                           num_loss_log_vars=log_vars, managed_ids=build_managed_ids(cfg),
                           sequence_embeddings=sequence_embeddings,
                           sequence_features=build_sequence_features(cfg))
