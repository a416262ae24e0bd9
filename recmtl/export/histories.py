"""Behaviour sequences in the serving graph: jagged history embeddings -> their encoders' blocks.

A bundle keeps every table outside its graph (``embeddings.safetensors``), sequences' tables
included, so a history reaches the graph already looked up, as a jagged pair per sequence
feature, in manifest order:

- ``<feature>_values [T, D]`` float32: the B rows' history embeddings back to back, each row
  oldest first (``T`` = the sum of the lengths, dynamic, 0 allowed);
- ``<feature>_lengths [B]`` int64: ids per row (0 for an empty history; above ``max_len`` the
  graph keeps the row's ``max_len`` most recent ids, as training does).

``pooled [B, P]`` then holds only the non-sequence features' blocks (a sequence's query, the
candidate, among them); ``SequenceBlocks`` inserts each encoder's ``[B, D]`` output at its
feature's place, so the dense part sees the training layout. No torchrec and no fbgemm op
enters the graph: padding is ``jagged_to_padded`` (cumsum, arange, a gather), which
``torch.export`` and the ONNX exporter both take with a dynamic B and a dynamic T.
"""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.sequence import jagged_to_padded
from recmtl.modules.sequence_features import SequenceFeatures


class SequenceBlocks(nn.Module):
    """``pooled [B, P_rest], histories (values [T_s, D], lengths [B]) per sequence ->
    pooled [B, P]`` in training's feature order.

    Args:
        features: ``(name, width)`` of every sparse feature, in the model's order.
        sequence_features: the trained model's module (its encoders, queries, ``max_len``).
    """

    def __init__(self, features: list[tuple[str, int]], sequence_features: SequenceFeatures) -> None:
        super().__init__()
        self.encoders = sequence_features.encoders
        self.queries = dict(sequence_features.queries)
        self.max_lens = dict(sequence_features.max_lens)
        self.order = [name for name, _ in features]
        self.sequences = [name for name in self.order if name in self.encoders]
        # Where each non-sequence feature's block sits in the served pooled input.
        self.slices: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, width in features:
            if name not in self.encoders:
                self.slices[name] = (offset, offset + width)
                offset += width
        self.rest_width = offset

    def forward(self, pooled: torch.Tensor, histories: list[torch.Tensor]) -> torch.Tensor:
        blocks = {name: pooled[:, a:b] for name, (a, b) in self.slices.items()}
        for i, name in enumerate(self.sequences):
            values, lengths = histories[2 * i], histories[2 * i + 1]
            max_len = self.max_lens[name]
            keys = jagged_to_padded(values, lengths, max_len)
            blocks[name] = self.encoders[name](blocks[self.queries[name]], keys,
                                               lengths.clamp(max=max_len))
        return torch.cat([blocks[name] for name in self.order], dim=1)


def input_names(sequences: list[str]) -> list[str]:
    """The graph's history inputs after ``pooled`` and ``dense``, in order."""
    return [f"{name}_{part}" for name in sequences for part in ("values", "lengths")]


def example_histories(blocks: SequenceBlocks, dims: dict[str, int], batch: int
                      ) -> list[torch.Tensor]:
    """Tracing inputs for ``batch`` rows: lengths 0 .. max_len + 1 (empty and cut rows), and a
    total ``T`` that is neither 0, 1 nor ``batch`` (export must not tie T to a constant or to B)."""
    out = []
    for name in blocks.sequences:
        lengths = torch.arange(batch, dtype=torch.int64) % (blocks.max_lens[name] + 2)
        lengths[0] = 0
        if int(lengths.sum()) in (0, 1, batch):
            lengths[-1] += 2 + batch
        out += [torch.randn(int(lengths.sum()), dims[name]), lengths]
    return out


def history_shapes(blocks: SequenceBlocks, batch: torch.export.Dim) -> list[dict[int, object]]:
    """``dynamic_shapes`` entries of the history inputs: B shared, one total length per sequence."""
    out: list[dict[int, object]] = []
    for name in blocks.sequences:
        total = torch.export.Dim(f"{name}_total", min=0, max=1 << 30)
        out += [{0: total}, {0: batch}]
    return out
