"""INFNet: categorical, sequence and task tokens through proxy cross-attention and Proxy Gated
Units; a history reaches it as its item slots, not pooled."""

from __future__ import annotations

from recmtl.config import ModelConfig, SequenceConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.modules.infnet import INFNet, SequenceTokens


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> INFNet:
    """Categorical tokens from ``inputs.blocks`` (but a history's block, its ``(L, D)`` slots)
    and the columns left; without blocks every column is a token."""
    m = model.infnet
    return INFNet(block_widths=list(inputs.blocks), sequence_blocks=dict(inputs.sequences),
                  num_scalars=inputs.num_scalars, num_tasks=len(tasks), dim=m.dim,
                  num_layers=m.num_layers, num_heads=m.num_heads, num_proxies=m.num_proxies,
                  hidden=m.pgu_hidden, task_reads=m.task_reads)


def slots(model: ModelConfig, seq: SequenceConfig, dim: int, num_tasks: int) -> SequenceTokens:
    """A history as its ``max_len`` slots of ``D + 1`` (embedding, validity)."""
    return SequenceTokens(embedding_dim=dim, max_len=seq.max_len)


ARCH = Architecture(build, about="feature, history and task tokens through proxy "
                    "cross-attention and gated units",
                    sequence_encoder=slots,
                    sequence_width=lambda dim, max_len, num_tasks: max_len * (dim + 1))
