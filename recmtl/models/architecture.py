"""The contract between the feature layer and a backbone, and what an architecture declares.

The feature layer (``recmtl/models/features.py``) hands every backbone one matrix
``x [B, width]``: the sparse features' blocks in config order (a pooled embedding ``[B, D]``,
or whatever the architecture's sequence encoder makes of a history), then the interaction's
pair products as one more block when there are any, then the dense floats (plain or
numeric-encoded, ``num_scalars`` columns). An :class:`Architecture` says how a history reaches
it, whether it takes the pair products itself, and how to build the backbone from
``BackboneInputs``; the backbone reports its own ``output_dim``. ``registry.py`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

from recmtl.config import ModelConfig, SequenceConfig


@dataclass(frozen=True)
class BackboneInputs:
    """What a backbone reads: ``x [B, width]`` = ``blocks`` (leading column blocks, one per
    sparse feature, then one of pair products if any), then ``num_scalars`` dense columns.

    ``sequences``: the block index of each history -> ``(max_len L, embedding dim D)``.
    ``num_tasks``: the towers the backbone feeds (its output is ``[T, B, H]`` or ``[B, H]``).

    Example:
        >>> BackboneInputs(width=14, blocks=(4, 4, 1), sequences={1: (5, 4)}).num_scalars
        5
    """

    width: int
    blocks: tuple[int, ...] = ()
    sequences: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def num_scalars(self) -> int:
        return self.width - sum(self.blocks)

    @classmethod
    def flat(cls, width: int) -> BackboneInputs:
        """Plain columns, no blocks: what an inner backbone (DTRN's bottom) reads."""
        return cls(width=width)


# (model, inputs, tasks) -> a backbone module with ``output_dim``.
BuildBackbone = Callable[[ModelConfig, BackboneInputs, list[str]], nn.Module]
# (model, sequence, embedding dim D, num tasks) -> a history encoder (see ``SequenceFeatures``).
BuildSequenceEncoder = Callable[[ModelConfig, SequenceConfig, int, int], nn.Module]
# (embedding dim D, max_len L, num tasks T) -> the width of a history's block.
SequenceWidth = Callable[[int, int, int], int]


def pooled(dim: int, max_len: int, num_tasks: int) -> int:
    """A history pooled by target attention (DIN) or BST into one ``[B, D]`` block."""
    return dim


@dataclass(frozen=True)
class Architecture:
    """One backbone family: how to build it and what it takes from the feature layer.

    ``build``: the backbone from the model config and its inputs.
    ``sequence_encoder``: how it reads a history (None: the sequence config's DIN / BST
    encoder, pooled to ``[B, D]``, which the ranker's dot interaction pairs like any pooled
    feature); ``sequence_width`` is then the width of that block.
    ``own_interaction``: it takes the pair products itself (per task), so the ranker's
    interaction is the identity and ``model.interaction`` is the backbone's to read.
    ``about``: one line for the docs and ``--help``.
    """

    build: BuildBackbone
    about: str
    sequence_encoder: BuildSequenceEncoder | None = None
    sequence_width: SequenceWidth = pooled
    own_interaction: bool = False
