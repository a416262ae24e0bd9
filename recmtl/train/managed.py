"""Managed-collision tables in training: every rank records the global batch's raw ids (so
all ranks hold the same id -> row mapping), and the rows given to new ids are re-initialised,
weights and fused optimizer state alike, before the step that first reads them."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recmtl.modules.managed_ids import ManagedIds
from recmtl.train.warm_start import copy_rows, row_tensors


def all_gather_cat(values: torch.Tensor) -> torch.Tensor:
    """``values`` of every rank, concatenated in rank order (collective; sizes may differ)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    world = dist.get_world_size()
    size = torch.tensor([values.numel()], dtype=torch.int64, device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = values.new_zeros(longest)
    padded[:values.numel()] = values
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:int(s.item())] for o, s in zip(out, sizes, strict=True)])


class Admission:
    """``before_step(batch.sparse)`` for the training loop: records the step's ids in the
    ranker's managed tables and re-initialises the rows new ids take (collective)."""

    def __init__(self, managed: ManagedIds, model: torch.nn.Module, optimizer: Any,
                 seed: int) -> None:
        self.managed, self.model, self.optimizer, self.seed = managed, model, optimizer, seed
        self.steps = 0
        self.rows_taken: dict[str, int] = dict.fromkeys(managed.tables, 0)

    def __call__(self, sparse: Any) -> None:
        self.steps += 1
        taken = self.managed.admit(sparse, all_gather_cat)
        if taken:
            reset_rows(self.model, self.optimizer, taken, self.seed * 1_000_003 + self.steps)
            for table, rows in taken.items():
                self.rows_taken[table] += int(rows.numel())


@torch.no_grad()
def reset_rows(model: torch.nn.Module, optimizer: Any, rows: dict[str, torch.Tensor],
               seed: int) -> None:
    """Rows ``rows[table]`` of each sharded table get fresh weights (uniform in
    ``+-sqrt(1 / rows)``, torchrec's default initialisation, drawn from ``seed`` so every rank
    draws the same) and a zero fused optimizer state, in every shard that holds them.

    In place: the state dicts' shards are views of the live tables and fused optimizer state
    (fbgemm's), so nothing is loaded back."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    for table, taken in rows.items():
        new_ids = taken.cpu().numpy().astype(np.int64)
        old_ids = np.arange(len(new_ids), dtype=np.int64)
        tensors = row_tensors(state, table)
        table_rows = int(tensors[0][1].size(0))  # the weight's
        for flat, live in tensors:
            shape = tuple(live.size())
            if flat.startswith("model."):
                bound = (1.0 / shape[0]) ** 0.5
                generator = torch.Generator().manual_seed(seed + zlib.crc32(table.encode()))
                fresh = torch.empty((len(new_ids), *shape[1:])).uniform_(
                    -bound, bound, generator=generator)
            else:
                fresh = torch.zeros((len(new_ids), *shape[1:]))
            if isinstance(live, ShardedTensor):  # a row-wise state: in each column shard
                copy_rows(fresh, live, old_ids, new_ids, rows=table_rows if live.dim() == 1
                          else None)
            else:  # a data-parallel table: every rank holds all of it
                live.index_copy_(0, taken.to(live.device), fresh.to(live.dtype).to(live.device))
