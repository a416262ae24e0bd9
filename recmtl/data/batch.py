"""The contract between data and model: one training or evaluation batch.

Notation: B = rows in the batch, F = sparse features, D = dense features.

``sparse`` is a torchrec ``KeyedJaggedTensor`` with keys in the configured feature order; its
``lengths`` has F * B entries laid out key-major (all rows of feature 0, then feature 1, ...),
and ``values`` holds the ids in the same order. A single-valued feature has length 1 per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx._symbolic_trace import PHBase
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """dense [B, D] float32; sparse KJT (F keys, B rows); labels {column: [B] float32};
    group [B] int64 or None (GAUC group); extras {column: [B] float32} (e.g. oracle
    probabilities, carried for evaluation only)."""

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: dict[str, torch.Tensor]
    group: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.dense.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, non_blocking=non_blocking)

        return Batch(
            dense=move(self.dense),
            sparse=self.sparse.to(device=device, non_blocking=non_blocking),
            labels={k: move(v) for k, v in self.labels.items()},
            group=None if self.group is None else move(self.group),
            extras={k: move(v) for k, v in self.extras.items()},
        )

    def to_proxy_tuple(self, model: torch.nn.Module) -> dict[str, Any]:
        """For torchrec's train pipelines: placeholders for the model's ``(dense, sparse)``
        arguments that name the batch attributes feeding them, so the pipeline can start the
        sharded embeddings' input all-to-all of the next batch from ``batch.sparse``."""
        return {"dense": _Field("dense"), "sparse": _Field("sparse")}

    def record_stream(self, stream: torch.Stream) -> None:
        """Lets torchrec's train pipelines keep this batch alive on a side CUDA stream."""
        self.dense.record_stream(stream)
        self.sparse.record_stream(stream)
        for t in [*self.labels.values(), *self.extras.values()]:
            t.record_stream(stream)
        if self.group is not None:
            self.group.record_stream(stream)


class _Field(PHBase):
    """An FX placeholder that remembers which ``Batch`` attribute it stands for (torchrec reads
    ``ph_key``; FX copies the attributes of a ``PHBase`` onto the placeholder node)."""

    def __init__(self, key: str) -> None:
        self.ph_key = key
