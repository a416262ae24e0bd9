"""The A/B baseline of `pipelines.bench.training`: how a common pure-PyTorch MTL library trains the same
workload: one ``nn.EmbeddingBag`` per feature (dense gradients), a Python loop over experts and
gates, Adam on everything, batches already in memory. Same shapes as the recmtl model."""

from __future__ import annotations

import time

import torch
from torch import nn

from recmtl.config import Config
from recmtl.data.batch import Batch
from recmtl.losses import multitask_loss


class LoopMMoE(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        tables = {t.name: t for t in cfg.features.tables}
        self.features = [f.name for f in cfg.features.sparse]
        self.embeddings = nn.ModuleDict({
            f.name: nn.EmbeddingBag(tables[f.table].num_embeddings, tables[f.table].dim,
                                    mode=tables[f.table].pooling)
            for f in cfg.features.sparse})
        width = sum(tables[f.table].dim for f in cfg.features.sparse) + len(cfg.features.dense)
        self.tasks = cfg.base_tasks()

        def mlp(sizes: list[int]) -> nn.Sequential:
            layers: list[nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:], strict=True):
                layers += [nn.Linear(a, b), nn.ReLU()]
            return nn.Sequential(*layers)

        m = cfg.model
        self.experts = nn.ModuleList(mlp([width, *m.expert_layers]) for _ in range(m.num_experts))
        self.gates = nn.ModuleList(nn.Linear(width, m.num_experts) for _ in self.tasks)
        self.towers = nn.ModuleList(
            nn.Sequential(mlp([m.expert_layers[-1], *m.tower_layers]),
                          nn.Linear(m.tower_layers[-1], 1)) for _ in self.tasks)

    def forward(self, ids: dict[str, tuple[torch.Tensor, torch.Tensor]],
                dense: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.cat([self.embeddings[f](*ids[f]) for f in self.features] + [dense], dim=1)
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, E, D]
        out = {}
        for name, gate, tower in zip(self.tasks, self.gates, self.towers, strict=True):
            w = torch.softmax(gate(x), dim=-1).unsqueeze(-1)
            out[name] = tower((w * experts).sum(1)).squeeze(-1)
        return out


def bench_baseline(cfg: Config, batches: list[Batch], warmup: int = 3) -> dict[str, float]:
    """Trains on ``batches`` (already in memory); returns steady samples/s."""
    torch.manual_seed(cfg.seed)
    model = LoopMMoE(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.dense_lr)
    inputs = [({k: (jt.values(), jt.offsets()[:-1]) for k, jt in b.sparse.to_dict().items()},
               b.dense, b.labels) for b in batches]
    rows, start = 0, time.perf_counter()
    for i, (ids, dense, labels) in enumerate(inputs):
        if i == warmup:
            rows, start = 0, time.perf_counter()
        loss, _ = multitask_loss(model(ids, dense), labels, cfg.tasks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rows += dense.shape[0]
    return {"samples_per_s": rows / (time.perf_counter() - start), "steps": len(inputs) - warmup}
