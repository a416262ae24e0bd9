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

    ``sharding_types`` restricts the planner per table (e.g. ``{"user": ["table_wise"]}``);
    by default it chooses freely (small tables often go data-parallel).

    ``model.embeddings`` should live on the meta device: DMP allocates and initialises only the
    shards each rank owns. The dense part is replicated (DDP) and trained with Adam.
    """
    apply_optimizer_in_backward(SPARSE_OPTIMIZERS[train.sparse_optimizer],
                                model.embeddings.parameters(), {"lr": train.sparse_lr})
    sharders = [EmbeddingBagCollectionSharder()]
    topology = Topology(world_size=dist.get_world_size(), compute_device=device.type)
    constraints = {name: ParameterConstraints(sharding_types=types)
                   for name, types in (sharding_types or {}).items()}
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(module=model, device=device, plan=plan, sharders=sharders)
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(dmp.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=train.dense_lr),
    )
    return dmp, CombinedOptimizer([dmp.fused_optimizer, dense]), plan
