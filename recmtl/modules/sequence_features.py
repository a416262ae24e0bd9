"""The features of unpooled tables: jagged embeddings -> one ``[B, D]`` block per feature.

Tables read by a behaviour sequence live in a torchrec ``EmbeddingCollection``, which returns
one ``JaggedTensor`` per feature instead of a pooled vector: ``values [N_f, D]`` holds the B
rows' embeddings back to back, in row order and, within a row, in list order (oldest first
for a history), and ``lengths [B]`` their counts (``N_f = sum(lengths)``; a single-valued
feature has every length 1, an empty or null list length 0). The other features of those
tables (the candidate id, plain multi-valued lists) are pooled here by their lengths
(sum or mean, segment ops: no loop over rows), and each sequence is padded to
``[B, max_len, D]`` (its most recent ``max_len`` ids) and pooled by its encoder with the
candidate's embedding as query.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from recmtl.modules.sequence import jagged_to_padded


def segment_pool(values: torch.Tensor, lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """``values [N, D]``, ``lengths [B] -> [B, D]``: each row's sum (``mode="sum"``) or mean
    (``"mean"``) of its ``lengths[b]`` embeddings; a row of length 0 gives zeros.

    Example:
        >>> segment_pool(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([2, 0, 1]), "mean")
        tensor([[2.],
                [0.],
                [5.]])
    """
    lengths = lengths.to(torch.int64)
    summed = torch.segment_reduce(values, "sum", lengths=lengths, axis=0, unsafe=True)
    if mode == "sum":
        return summed
    if mode == "mean":
        return summed / lengths.clamp(min=1).unsqueeze(1).to(summed.dtype)
    raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")


class SequenceFeatures(nn.Module):
    """``{feature: JaggedTensor [N_f, D]} -> {feature: [B, D]}`` for the features of the
    ``EmbeddingCollection``'s tables.

    Args:
        pooling: ``{feature: "sum" | "mean"}``, the features pooled by their lengths (every
            feature of the collection that is not a sequence, the queries among them).
        encoders: ``{sequence feature: module}``, each ``query [B, D], keys [B, L, D],
            lengths [B] -> [B, D]`` (``TargetAttention``, ``SequenceEncoder``).
        queries: ``{sequence feature: pooled feature}``, the candidate each history is
            compared with.
        max_lens: ``{sequence feature: L}``, the most recent ids kept.
        sides: ``{sequence feature: side features}``, lists aligned with the history by
            position (a row's side list as long as its history: the reader checks it); each
            side's padded embeddings are added to the keys, as BST adds positions (so the
            attention sees, say, each event's age bucket beside its item).
    """

    def __init__(self, pooling: dict[str, str], encoders: dict[str, nn.Module],
                 queries: dict[str, str], max_lens: dict[str, int],
                 sides: dict[str, tuple[str, ...]] | None = None) -> None:
        super().__init__()
        if set(encoders) != set(queries) or set(encoders) != set(max_lens):
            raise ValueError("encoders, queries and max_lens must name the same sequences")
        missing = sorted(q for q in queries.values() if q not in pooling)
        if missing:
            raise ValueError(f"queries {missing} are not pooled features")
        self.pooling = dict(pooling)
        self.encoders = nn.ModuleDict(encoders)
        self.queries = dict(queries)
        self.max_lens = dict(max_lens)
        self.sides = {name: tuple(s) for name, s in (sides or {}).items() if s}
        unknown = sorted(set(self.sides) - set(encoders))
        if unknown:
            raise ValueError(f"sides name {unknown}, which are not sequences")
        self.output_dims = {name: int(enc.output_dim)  # type: ignore[arg-type]
                            for name, enc in encoders.items()}

    def forward(self, jagged: dict[str, JaggedTensor]) -> dict[str, torch.Tensor]:
        out = {name: segment_pool(jagged[name].values(), jagged[name].lengths(), mode)
               for name, mode in self.pooling.items()}
        for name, encoder in self.encoders.items():
            history = jagged[name]
            lengths = history.lengths().to(torch.int64)
            keys = jagged_to_padded(history.values(), lengths, self.max_lens[name])
            for side in self.sides.get(name, ()):
                keys = keys + jagged_to_padded(jagged[side].values(), jagged[side].lengths(),
                                               self.max_lens[name])
            out[name] = encoder(out[self.queries[name]], keys,
                                lengths.clamp(max=self.max_lens[name]))
        return out
