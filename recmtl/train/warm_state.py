"""What a warm start does to the optimizer state it carried over (``train.warm_start``).

Row-wise Adagrad divides each row's step by the square root of the sum of its squared
gradients so far: a model continued for many days moves its known rows less and less, on
whatever today brings. ``sparse_state_scale`` scales those sums once, as the warm start ends
(0: each row steps as on its first day; 1: as the old model would go on). ``dense_state:
reset`` clears the dense optimizer's moments and step count (Adam starts over).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recmtl.config.schema import WarmStartConfig


def settle(optimizer: Any, settings: WarmStartConfig) -> dict[str, Any]:
    """Applies ``settings`` to a torchrec ``CombinedOptimizer`` (sparse fused optimizer,
    dense optimizer) after a warm start; returns what it did, for ``warm_start.json``."""
    sparse, dense = (opt for _, opt in optimizer.optimizers)
    scaled = 0
    if settings.sparse_state_scale != 1.0:
        state = sparse.state_dict()
        for per_param in state["state"].values():
            for tensor in per_param.values():
                if isinstance(tensor, ShardedTensor):
                    for shard in tensor.local_shards():
                        with torch.no_grad():
                            shard.tensor.mul_(settings.sparse_state_scale)
                    scaled += 1
        sparse.load_state_dict(state)
    if settings.dense_state == "reset":  # zeroed in place: checkpoints expect the state
        for per_param in dense.state.values():
            for value in per_param.values():
                if isinstance(value, torch.Tensor):
                    with torch.no_grad():
                        value.zero_()
    return {"sparse_state_scale": settings.sparse_state_scale, "sparse_states_scaled": scaled,
            "dense_state": settings.dense_state}
