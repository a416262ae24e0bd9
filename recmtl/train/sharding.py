"""torchrec sharding: planner -> DistributedModelParallel with fused embedding optimizers."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torchrec
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recmtl.config import TrainConfig
from recmtl.modules.ranker import MultiTaskRanker

# Fused into the embedding backward (fbgemm TBE). Adam is not a fused CPU optimizer.
SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": torchrec.optim.RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}


def shard_model(model: MultiTaskRanker, train: TrainConfig, device: torch.device,
                sharding_types: dict[str, list[str]] | None = None,
                ) -> tuple[DistributedModelParallel, CombinedOptimizer, ShardingPlan]:
    """Plans and shards the embedding tables over the default process group.

    ``sharding_types`` restricts the planner per table (e.g. ``{"user": ["table_wise"]}``).
    By default every table may take any model-parallel type but data-parallel: those tables
    run the fused TBE kernels, whose optimizer state lives in ``fused_optimizer`` and so is
    checkpointed (a data-parallel table's in-backward optimizer state is not, and its
    gradient all-reduce is slow for big tables).

    ``model.embeddings`` should live on the meta device: DMP allocates and initialises only the
    shards each rank owns. The dense part is replicated (DDP) and trained with Adam.
    """
    apply_optimizer_in_backward(SPARSE_OPTIMIZERS[train.sparse_optimizer],
                                model.embeddings.parameters(), {"lr": train.sparse_lr})
    sharders = [EmbeddingBagCollectionSharder()]
    topology = Topology(world_size=dist.get_world_size(), compute_device=device.type)
    parallel = ["table_wise", "column_wise", "table_column_wise"]
    if device.type == "cuda":
        parallel += ["row_wise", "table_row_wise"]
    types_by_table = {t.name: parallel for t in model.embeddings.embedding_bag_configs()}
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
