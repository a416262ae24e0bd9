"""The multi-task ranker: pooled embeddings + dense features -> one logit per task.

Split in two so that the dense part can be exported on its own for serving:
``MultiTaskRanker`` = torchrec ``EmbeddingBagCollection`` (sharded in training) + ``DenseRanker``,
plus, when the config has behaviour sequences, an ``EmbeddingCollection`` (unpooled, sharded
too) whose jagged output ``SequenceFeatures`` turns into one block per feature.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.modules.managed_ids import ManagedIds
from recmtl.modules.mlp import MLP
from recmtl.modules.sequence_features import SequenceFeatures
from recmtl.modules.sparse_moe import TaskSparseMoE


class DenseRanker(nn.Module):
    """``pooled [B, P], dense [B, D] -> {output: [B]}``: one logit (binary) or value
    (regression) per task, plus auxiliary outputs.

    Args:
        interaction: ``[B, P] -> [B, I]`` applied to pooled embeddings (identity for none).
        backbone: ``[B, I + D] -> [T, B, H]`` (MMoE, ...), one representation per task.
        towers: one module per task mapping ``[B, H] -> [B, tower width]``.
        tasks: task names, in the backbone's task order.
        transfer: optional ``T x [B, W] -> T x [B, W]`` between towers and heads (AITM).
        aux_outputs: ``{output name: task}``: an extra linear head on that task's tower
            (e.g. ESCM2-DR's imputed error), returned beside the task logits.
        dense_encoder: optional ``[B, D] -> [B, D']`` on the dense floats before the backbone
            (``recmtl.modules.numeric``: numeric features as embeddings).
    """

    def __init__(self, interaction: nn.Module, backbone: nn.Module, towers: list[MLP],
                 tasks: list[str], transfer: nn.Module | None = None,
                 aux_outputs: dict[str, str] | None = None,
                 dense_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.dense_encoder = dense_encoder
        self.interaction = interaction
        self.backbone = backbone
        self.towers = nn.ModuleList(towers)
        self.transfer = transfer
        self.heads = nn.ModuleList(nn.Linear(t.output_dim, 1) for t in towers)
        self.tasks = list(tasks)
        self.aux_outputs = dict(aux_outputs or {})
        self.aux_heads = nn.ModuleDict({
            name: nn.Linear(towers[self.tasks.index(task)].output_dim, 1)
            for name, task in self.aux_outputs.items()})

    def forward(self, pooled: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.dense_encoder is not None:
            dense = self.dense_encoder(dense)
        per_task = self.backbone(torch.cat([self.interaction(pooled), dense], dim=1))
        device = per_task.device.type
        if torch.is_autocast_enabled(device):
            # Towers and heads in float32 under bf16 autocast: they hold a sliver of the FLOPs,
            # and bfloat16 logits cost ~0.002 test AUC on the standard workload (docs/training.md).
            with torch.autocast(device, enabled=False):
                return self._heads(per_task.float())
        return self._heads(per_task)

    def _heads(self, per_task: torch.Tensor) -> dict[str, torch.Tensor]:
        reps = [tower(per_task[i]) for i, tower in enumerate(self.towers)]
        if self.transfer is not None:
            reps = self.transfer(reps)
        out = {name: head(rep).squeeze(-1)
               for name, head, rep in zip(self.tasks, self.heads, reps, strict=True)}
        for name, task in self.aux_outputs.items():
            out[name] = self.aux_heads[name](reps[self.tasks.index(task)]).squeeze(-1)
        return out


class MultiTaskRanker(nn.Module):
    """``(dense [B, D], sparse KJT) -> {task: logit [B]}``.

    Pooled embeddings are taken from the ``KeyedTensor`` by feature name in ``feature_order``:
    under table-wise sharding torchrec returns keys grouped by rank, so positional
    ``.values()`` would silently permute features against the unsharded model.

    ``managed_ids`` maps the raw ids of managed-collision tables to rows before the lookup.

    ``sequence_embeddings`` (an ``EmbeddingCollection``) looks up the tables read by behaviour
    sequences, unpooled, and ``sequence_features`` pools them into ``[B, D]`` blocks (the
    candidate by its lengths, each history by attention with the candidate as query); each
    block takes its feature's place in ``feature_order``. ``embeddings`` is None when every
    table is unpooled.

    ``loss_log_vars`` (uncertainty weighting: one learned log variance per task) is not used by
    ``forward``; it lives here so that it is replicated, optimised and checkpointed with the
    dense parameters.

    ``auxiliary_loss()``: the losses the last forward left on its modules (a sparse MoE's load
    balance), for the training loop to add to the task losses.
    """

    def __init__(self, embeddings: EmbeddingBagCollection | None, dense_ranker: DenseRanker,
                 feature_order: list[str], num_loss_log_vars: int = 0,
                 managed_ids: ManagedIds | None = None,
                 sequence_embeddings: EmbeddingCollection | None = None,
                 sequence_features: SequenceFeatures | None = None) -> None:
        super().__init__()
        if (sequence_embeddings is None) != (sequence_features is None):
            raise ValueError("sequence_embeddings and sequence_features come together")
        self.embeddings = embeddings
        self.sequence_embeddings = sequence_embeddings
        self.sequence_features = sequence_features
        self.managed_ids = managed_ids
        self.dense_ranker = dense_ranker
        self.feature_order = list(feature_order)
        self.loss_log_vars = (nn.Parameter(torch.zeros(num_loss_log_vars))
                              if num_loss_log_vars else None)

    def pooled(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        if self.managed_ids is not None:
            sparse = self.managed_ids(sparse)
        by_name = self.embeddings(sparse).to_dict() if self.embeddings is not None else {}
        if self.sequence_embeddings is not None and self.sequence_features is not None:
            by_name |= self.sequence_features(self.sequence_embeddings(sparse))
        return torch.cat([by_name[f] for f in self.feature_order], dim=1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        return self.dense_ranker(self.pooled(sparse), dense)

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The sum of every ``TaskSparseMoE``'s ``aux_loss`` from the last forward (a scalar
        with gradient), or None when the model has none."""
        # Through modules(): under DMP the dense ranker may sit inside a DDP wrapper.
        found = [m.aux_loss for m in self.dense_ranker.modules()
                 if isinstance(m, TaskSparseMoE) and m.aux_loss is not None]
        return torch.stack(found).sum() if found else None
