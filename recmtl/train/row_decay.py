"""Weight decay of embedding rows, lazily: only the rows a step looks up, as sparse optimizers
update only those rows.

fbgemm's TBE kernels take ``weight_decay`` and ``weight_decay_mode``, but its CPU row-wise
Adagrad ignores them (a step with ``weight_decay=50`` moves the rows exactly as one without;
see docs/training.md), so recmtl applies the decay itself, the same way on every device,
before the step's forward (the order of ``torch.optim.AdamW``: decay, then the gradient step):

- ``decoupled``: each row looked up by the global batch is multiplied by ``1 - lr * wd``.
- ``frequency`` (the mini-batch aware regularisation of DIN, Zhou et al. 2018, with the counts
  seen so far standing in for the data set's): a row looked up ``k`` times in the batch and
  ``n`` times since training began is multiplied by ``1 - lr * wd * k / n``: over an epoch a
  rare id is decayed about as much as a frequent one, instead of ``n`` times less.

Every rank gathers the step's ids (the rows of a row-wise shard are looked up by other ranks'
rows too) and scales the rows its own shards hold, weights only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.config import Config
from recmtl.train.managed import all_gather_cat
from recmtl.train.warm_start import table_param


class RowDecay:
    """``before_step(batch.sparse)``: decays the rows the step is about to look up.

    Args:
        model: the sharded ranker (``DistributedModelParallel``).
        decay: ``{table: (weight decay, mode, base learning rate, rows)}``.
        features: ``{feature: table}`` of the decayed tables' features.
        lr_factor: the sparse schedule's current factor of the base learning rates.
    """

    def __init__(self, model: torch.nn.Module, decay: dict[str, tuple[float, str, float, int]],
                 features: dict[str, str], lr_factor: Callable[[], float]) -> None:
        self.model, self.decay, self.features, self.lr_factor = model, decay, features, lr_factor
        state = model.state_dict()  # views of the live tables: scaled in place
        self.weights = {t: state[table_param(state, t)] for t in decay}
        self.seen = {t: torch.zeros(rows, dtype=torch.float64)
                     for t, (_, mode, _, rows) in decay.items() if mode == "frequency"}

    @torch.no_grad()
    def __call__(self, sparse: KeyedJaggedTensor) -> None:
        managed = getattr(_ranker(self.model), "managed_ids", None)
        if managed is not None:
            sparse = managed(sparse)  # raw ids -> rows (admission ran before)
        by_table: dict[str, list[torch.Tensor]] = {}
        values, bounds = sparse.values(), sparse.offset_per_key()
        for i, key in enumerate(sparse.keys()):
            if key in self.features:
                by_table.setdefault(self.features[key], []).append(values[bounds[i]:bounds[i + 1]])
        for table in self.decay:  # every rank gathers every table, in one order
            ids = torch.cat(by_table.get(table, [values.new_zeros(0)]))
            rows, counts = torch.unique(all_gather_cat(ids).cpu(), return_counts=True)
            factor = self.factors(table, rows, counts)
            scale_rows(self.weights[table], rows, factor)

    def factors(self, table: str, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The multiplier of each looked-up row (float64)."""
        wd, mode, base_lr, _ = self.decay[table]
        lr = base_lr * self.lr_factor()
        if mode == "decoupled":
            return torch.full(rows.shape, 1.0 - lr * wd, dtype=torch.float64)
        seen = self.seen[table]
        seen.index_add_(0, rows, counts.to(torch.float64))
        return 1.0 - lr * wd * counts.to(torch.float64) / seen[rows]


def build_row_decay(cfg: Config, model: torch.nn.Module,
                    lr_factor: Callable[[], float]) -> RowDecay | None:
    """The hook for the tables with ``weight_decay`` (None when no table has one)."""
    decay: dict[str, tuple[float, str, float, int]] = {
        t.name: (t.weight_decay, str(t.weight_decay_mode),
                 t.lr if t.lr is not None else cfg.train.sparse_lr, t.num_embeddings)
        for t in cfg.features.tables if t.weight_decay > 0}
    if not decay:
        return None
    features = {f.name: f.table for f in cfg.features.sparse if f.table in decay}
    return RowDecay(model, decay, features, lr_factor)


def scale_rows(weight: Any, rows: torch.Tensor, factor: torch.Tensor) -> None:
    """``weight[rows] *= factor`` in every local shard of ``weight`` that holds them (a
    column-wise shard scales its columns of the row)."""
    if not isinstance(weight, ShardedTensor):  # data-parallel: the whole table is local
        weight[rows] *= factor.to(weight.dtype)[:, None]
        return
    for shard in weight.local_shards():
        start, size = shard.metadata.shard_offsets[0], shard.metadata.shard_sizes[0]
        held = (rows >= start) & (rows < start + size)
        local = shard.tensor
        local[rows[held] - start] *= factor[held].to(local.dtype)[:, None]


def _ranker(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
