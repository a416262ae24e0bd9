"""Config -> the feature layer: embedding tables, managed ids, history encoders, the dense
floats' encoding, the pair-product interaction, and the ``BackboneInputs`` they hand on.

How a history is read depends on the architecture (``Architecture.sequence_encoder``); nothing
here names one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.mc_modules import (
    DistanceLFU_EvictionPolicy,
    LFU_EvictionPolicy,
    LRU_EvictionPolicy,
    MCHEvictionPolicy,
    MCHManagedCollisionModule,
)

from recmtl.config import Config, SparseFeatureConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.models.registry import ARCHITECTURES
from recmtl.modules.interaction import DotInteraction
from recmtl.modules.managed_ids import ManagedIds
from recmtl.modules.numeric import PeriodicEncoding, PiecewiseLinearEncoding
from recmtl.modules.sequence import SequenceEncoder, TargetAttention
from recmtl.modules.sequence_features import SequenceFeatures

_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}
EVICTION_POLICIES: dict[str, Callable[[], MCHEvictionPolicy]] = {
    "lfu": LFU_EvictionPolicy,
    "lru": LRU_EvictionPolicy,
    "distance_lfu": DistanceLFU_EvictionPolicy,
}


def architecture(cfg: Config) -> Architecture:
    return ARCHITECTURES[cfg.model.arch]


def embedding_configs(cfg: Config) -> list[EmbeddingBagConfig]:
    """One pooled torchrec table per configured table that no sequence reads, fed by every
    feature that names it."""
    unpooled = cfg.features.sequence_tables()
    return [
        EmbeddingBagConfig(
            name=t.name,
            embedding_dim=t.dim,
            num_embeddings=t.num_embeddings,
            feature_names=[f.name for f in cfg.features.sparse if f.table == t.name],
            pooling=_POOLING[t.pooling],
        )
        for t in cfg.features.tables
        if any(f.table == t.name for f in cfg.features.sparse) and t.name not in unpooled
    ]


def sequence_embedding_configs(cfg: Config) -> list[EmbeddingConfig]:
    """The unpooled tables: every table a sequence reads, with all its features (torchrec
    cannot share one table between a bag collection and a collection)."""
    unpooled = cfg.features.sequence_tables()
    return [
        EmbeddingConfig(
            name=t.name,
            embedding_dim=t.dim,
            num_embeddings=t.num_embeddings,
            feature_names=[f.name for f in cfg.features.sparse if f.table == t.name],
        )
        for t in cfg.features.tables if t.name in unpooled
    ]


def _sequence_encoder(cfg: Config, f: SparseFeatureConfig, dim: int) -> nn.Module:
    seq = f.sequence
    assert seq is not None
    own = architecture(cfg).sequence_encoder
    if own is not None:
        return own(cfg.model, seq, dim, len(cfg.base_tasks()))
    if seq.encoder == "bst":
        return SequenceEncoder(embedding_dim=dim, num_heads=seq.num_heads,
                               num_layers=seq.num_layers, max_len=seq.max_len,
                               ffn_dim=seq.ffn_dim, attention_hidden_dims=seq.attention_layers,
                               dropout=seq.dropout, normalize=seq.normalize)
    return TargetAttention(embedding_dim=dim, hidden_dims=seq.attention_layers,
                           normalize=seq.normalize)


def build_sequence_features(cfg: Config) -> SequenceFeatures | None:
    """Pooling and encoders of the unpooled tables' features (None without sequences)."""
    unpooled = cfg.features.sequence_tables()
    if not unpooled:
        return None
    tables = {t.name: t for t in cfg.features.tables}
    features = [f for f in cfg.features.sparse if f.table in unpooled]
    sequences = [f for f in features if f.sequence is not None]
    return SequenceFeatures(
        pooling={f.name: tables[f.table].pooling for f in features if f.sequence is None},
        encoders={f.name: _sequence_encoder(cfg, f, tables[f.table].dim) for f in sequences},
        queries={f.name: f.sequence.query for f in sequences if f.sequence},
        max_lens={f.name: f.sequence.max_len for f in sequences if f.sequence},
        sides={f.name: f.sequence.side for f in sequences if f.sequence and f.sequence.side})


def build_managed_ids(cfg: Config) -> ManagedIds | None:
    """The MCH modules of the tables with ``managed_collision`` (None when there are none).
    They hold plain buffers, always allocated (never on the meta device): every rank keeps the
    whole id -> row mapping."""
    managed = {t.name: t for t in cfg.features.tables if t.managed_collision is not None}
    if not managed:
        return None
    modules = {}
    for name, t in managed.items():
        mc = t.managed_collision
        assert mc is not None
        modules[name] = MCHManagedCollisionModule(
            zch_size=t.num_embeddings, device=torch.device("cpu"), name=name,
            eviction_policy=EVICTION_POLICIES[mc.eviction](),
            eviction_interval=mc.eviction_interval)
    return ManagedIds(modules, {f.name: f.table for f in cfg.features.sparse
                                if f.table in managed})


def feature_widths(cfg: Config) -> list[int]:
    """The width of each sparse feature's block of the pooled input, in config order: its
    table's dim, or for a history the architecture's ``sequence_width``."""
    dims = {t.name: t.dim for t in cfg.features.tables}
    width_of = architecture(cfg).sequence_width
    num_tasks = len(cfg.base_tasks())
    return [dims[f.table] if f.sequence is None
            else width_of(dims[f.table], f.sequence.max_len, num_tasks)
            for f in cfg.features.sparse]


def pooled_width(cfg: Config) -> int:
    return sum(feature_widths(cfg))


def build_interaction(cfg: Config) -> nn.Module:
    """The ranker's interaction of the pooled embeddings: the pair products of every pooled
    block (a history the architecture encodes its own way is not paired), or the identity
    (``model.interaction: none``, or an architecture that takes them itself)."""
    arch = architecture(cfg)
    if cfg.model.interaction == "none" or arch.own_interaction:
        return nn.Identity()
    dims = {t.name: t.dim for t in cfg.features.tables}
    dim = dims[cfg.features.sparse[0].table]
    sparse = cfg.features.sparse
    if arch.sequence_encoder is not None and any(f.sequence for f in sparse):
        paired = [i for i, f in enumerate(sparse) if f.sequence is None]
        return DotInteraction(len(paired), dim, block_widths=feature_widths(cfg), features=paired)
    return DotInteraction(len(sparse), dim)


def input_blocks(cfg: Config, interaction: nn.Module) -> list[int]:
    """The widths of the backbone input's column blocks before the dense floats: one per pooled
    sparse feature, then the interaction's extra columns (the dot products) if any."""
    blocks = feature_widths(cfg)
    extra = int(getattr(interaction, "output_dim", sum(blocks))) - sum(blocks)
    return blocks + [extra] * (extra > 0)


def build_numeric_encoder(cfg: Config, edges: list[list[float]] | None = None) -> nn.Module | None:
    """``dense [B, F] -> [B, F * numeric_dim]``, or None: the plain floats.

    ``edges``: piecewise_linear's per-feature bin edges (``recmtl.train.worker.numeric_edges``);
    None puts ``[0, 1]`` in their place, for a model whose ``state_dict`` (holding the edges
    as buffers) is loaded next: a checkpoint restore or an export.
    """
    m, num_dense = cfg.model, len(cfg.features.dense)
    if m.numeric_encoding == "none" or not num_dense:
        return None
    if m.numeric_encoding == "piecewise_linear":
        return PiecewiseLinearEncoding(edges or [[0.0, 1.0]] * num_dense, dim=m.numeric_dim,
                                       num_bins=m.numeric_bins)
    return PeriodicEncoding(num_features=num_dense, num_frequencies=m.numeric_frequencies,
                            sigma=m.numeric_sigma, dim=m.numeric_dim)


def backbone_inputs(cfg: Config, interaction: nn.Module, dense_width: int) -> BackboneInputs:
    """What the backbone reads: the blocks before the dense part, then ``dense_width`` columns."""
    blocks = input_blocks(cfg, interaction)
    dims = {t.name: t.dim for t in cfg.features.tables}
    return BackboneInputs(
        width=sum(blocks) + dense_width, blocks=tuple(blocks),
        sequences={i: (f.sequence.max_len, dims[f.table])
                   for i, f in enumerate(cfg.features.sparse) if f.sequence is not None})
