"""The multi-task ranker: pooled embeddings + dense features -> one logit per task.

Split in two so that the dense part can be exported on its own for serving:
``MultiTaskRanker`` = torchrec ``EmbeddingBagCollection`` (sharded in training) + ``DenseRanker``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.modules.mlp import MLP


class DenseRanker(nn.Module):
    """``pooled [B, P], dense [B, D] -> {task: logit [B]}``.

    Args:
        interaction: ``[B, P] -> [B, I]`` applied to pooled embeddings (identity for none).
        backbone: ``[B, I + D] -> [T, B, H]`` (MMoE, ...), one representation per task.
        towers: one module per task mapping ``[B, H] -> [B, tower width]``.
        tasks: task names, in the backbone's task order.
    """

    def __init__(self, interaction: nn.Module, backbone: nn.Module, towers: list[MLP],
                 tasks: list[str]) -> None:
        super().__init__()
        self.interaction = interaction
        self.backbone = backbone
        self.towers = nn.ModuleList(towers)
        self.heads = nn.ModuleList(nn.Linear(t.output_dim, 1) for t in towers)
        self.tasks = list(tasks)

    def forward(self, pooled: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        per_task = self.backbone(torch.cat([self.interaction(pooled), dense], dim=1))
        return {
            name: head(tower(per_task[i])).squeeze(-1)
            for i, (name, tower, head) in enumerate(
                zip(self.tasks, self.towers, self.heads, strict=True))
        }


class MultiTaskRanker(nn.Module):
    """``(dense [B, D], sparse KJT) -> {task: logit [B]}``.

    Pooled embeddings are taken from the ``KeyedTensor`` by feature name in ``feature_order``:
    under table-wise sharding torchrec returns keys grouped by rank, so positional
    ``.values()`` would silently permute features against the unsharded model.
    """

    def __init__(self, embeddings: EmbeddingBagCollection, dense_ranker: DenseRanker,
                 feature_order: list[str]) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.dense_ranker = dense_ranker
        self.feature_order = list(feature_order)

    def pooled(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        by_name = self.embeddings(sparse).to_dict()
        return torch.cat([by_name[f] for f in self.feature_order], dim=1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        return self.dense_ranker(self.pooled(sparse), dense)
