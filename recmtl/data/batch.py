"""The contract between data and model: one training or evaluation batch.

Notation: B = rows in the batch, F = sparse features, D = dense features.

``sparse`` is a torchrec ``KeyedJaggedTensor`` with keys in the configured feature order; its
``lengths`` has F * B entries laid out key-major (all rows of feature 0, then feature 1, ...),
and ``values`` holds the ids in the same order. A single-valued feature has length 1 per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass
class Batch:
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

    def record_stream(self, stream: torch.cuda.Stream) -> None:
        """Lets torchrec's train pipelines keep this batch alive on a side CUDA stream."""
        self.dense.record_stream(stream)
        self.sparse.record_stream(stream)
        for t in [*self.labels.values(), *self.extras.values()]:
            t.record_stream(stream)
        if self.group is not None:
            self.group.record_stream(stream)
