"""torchrec sharding: planner -> DistributedModelParallel with fused embedding optimizers."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torchrec
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan, ShardingType
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recmtl.config import TableConfig, TrainConfig
from recmtl.modules.ranker import MultiTaskRanker

# Fused into the embedding backward (fbgemm TBE). Adam is not a fused CPU optimizer (the
# config refuses it there).
SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": torchrec.optim.RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
}
_ROW_WISE = [ShardingType.ROW_WISE.value, ShardingType.TABLE_ROW_WISE.value]


class RowWiseOnCPUSharder(EmbeddingBagCollectionSharder):
    """torchrec's stock sharder offers row-wise sharding on GPUs only; the CPU kernels and gloo
    run it as well (its pooled outputs are reduce-scattered), so offer it on CPU too."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = super().sharding_types(compute_device_type)
        return types + [t for t in _ROW_WISE if t not in types]


def table_weights(model: MultiTaskRanker) -> dict[str, torch.nn.Parameter]:
    """Every embedding table's weight by table name: the pooled collection's and the
    unpooled (sequence) collection's."""
    weights: dict[str, torch.nn.Parameter] = {}
    if model.embeddings is not None:
        weights |= {c.name: model.embeddings.embedding_bags[c.name].weight
                    for c in model.embeddings.embedding_bag_configs()}
    if model.sequence_embeddings is not None:
        weights |= {c.name: model.sequence_embeddings.embeddings[c.name].weight
                    for c in model.sequence_embeddings.embedding_configs()}
    return weights


def _apply_sparse_optimizers(model: MultiTaskRanker, train: TrainConfig,
                             tables: dict[str, TableConfig]) -> None:
    """One fused optimizer per group of tables that share optimizer and learning rate."""
    groups: dict[tuple[str, float], list[torch.nn.Parameter]] = {}
    for name, weight in table_weights(model).items():
        table = tables.get(name)
        key = ((table.optimizer if table and table.optimizer else train.sparse_optimizer),
               (table.lr if table and table.lr is not None else train.sparse_lr))
        groups.setdefault(key, []).append(weight)
    for (name, lr), params in groups.items():
        apply_optimizer_in_backward(SPARSE_OPTIMIZERS[name], params, {"lr": lr})


def shard_model(model: MultiTaskRanker, train: TrainConfig, device: torch.device,
                sharding_types: dict[str, list[str]] | None = None,
                tables: tuple[TableConfig, ...] = (),
                ) -> tuple[DistributedModelParallel, CombinedOptimizer, ShardingPlan]:
    """Plans and shards the embedding tables over the default process group.

    ``sharding_types`` restricts the planner per table (e.g. ``{"user": ["table_wise"]}``);
    so does each ``tables[i].sharding`` (the config), and ``tables[i].optimizer`` / ``lr``
    pick that table's fused optimizer. By default every table may take any model-parallel type
    but data-parallel: those tables run the fused TBE kernels, whose optimizer state lives in
    ``fused_optimizer`` and so is checkpointed (a data-parallel table's in-backward optimizer
    state is not, and its gradient all-reduce is slow for big tables: configure data_parallel
    only for small tables, knowing a resume restarts their optimizer state).

    ``model.embeddings`` should live on the meta device: DMP allocates and initialises only the
    shards each rank owns. The dense part is replicated (DDP) and trained with Adam.
    """
    by_name = {t.name: t for t in tables}
    _apply_sparse_optimizers(model, train, by_name)
    # The sequence tables' EmbeddingCollection: torchrec's sharder (table-, column- and
    # row-wise on CPU; the default types below keep it to the first two).
    sharders = [RowWiseOnCPUSharder(), EmbeddingCollectionSharder()]
    topology = Topology(world_size=dist.get_world_size(), compute_device=device.type)
    parallel = ["table_wise", "column_wise", "table_column_wise"]
    if device.type == "cuda":
        parallel += ["row_wise", "table_row_wise"]
    types_by_table = {name: list(by_name[name].sharding) if name in by_name
                      and by_name[name].sharding else parallel
                      for name in table_weights(model)}
    types_by_table |= sharding_types or {}
    constraints = {name: ParameterConstraints(sharding_types=types)
                   for name, types in types_by_table.items()}
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(module=model, device=device, plan=plan, sharders=sharders)
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(dmp.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=train.dense_lr),
    )
    # Adam creates its state on the first step; a checkpoint restore needs it to exist (DCP
    # loads in place). A zero-gradient step creates it without moving any weight; resetting the
    # step counters keeps the run identical to lazy initialisation.
    dense.init_state()
    for state in dense.state.values():
        if "step" in state:
            state["step"].zero_()
    dense.zero_grad(set_to_none=True)
    return dmp, CombinedOptimizer([dmp.fused_optimizer, dense]), plan
