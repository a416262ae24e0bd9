"""Config -> ``MultiTaskRanker``. One explicit table of architectures; nothing else reads config."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.modules.mc_modules import (
    DistanceLFU_EvictionPolicy,
    LFU_EvictionPolicy,
    LRU_EvictionPolicy,
    MCHEvictionPolicy,
    MCHManagedCollisionModule,
)

from recmtl.config import ARCHITECTURES, Config, ModelConfig
from recmtl.config.schema import Architecture, SparseFeatureConfig
from recmtl.losses import imputation_output
from recmtl.modules.adatt import AdaTT, AdaTTLevel
from recmtl.modules.aitm import AITMTransfer
from recmtl.modules.dtrn import DTRN, TaskInterest, TaskSENet, task_width
from recmtl.modules.gates import DSelectKGate, SoftmaxGate
from recmtl.modules.home import HoME, SelfGate
from recmtl.modules.infnet import INFNet, SequenceTokens
from recmtl.modules.interaction import DotInteraction
from recmtl.modules.managed_ids import ManagedIds
from recmtl.modules.mlp import MLP, BatchedExperts, FeatureGate, GatedExperts
from recmtl.modules.mmoe import MMoE
from recmtl.modules.multitab import MultiTab, MultiTabTransformer
from recmtl.modules.numeric import PeriodicEncoding, PiecewiseLinearEncoding
from recmtl.modules.ple import PLE, CGCLevel
from recmtl.modules.ranker import DenseRanker, MultiTaskRanker
from recmtl.modules.sequence import SequenceEncoder, TargetAttention
from recmtl.modules.sequence_features import SequenceFeatures
from recmtl.modules.shared_bottom import SharedBottom
from recmtl.modules.sparse_moe import TaskSparseMoE
from recmtl.modules.tokens import FeatureTokenizer

_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}
EVICTION_POLICIES: dict[str, Callable[[], MCHEvictionPolicy]] = {
    "lfu": LFU_EvictionPolicy,
    "lru": LRU_EvictionPolicy,
    "distance_lfu": DistanceLFU_EvictionPolicy,
}


def _gate(model: ModelConfig, in_features: int, num_experts: int, num_gates: int = 1) -> nn.Module:
    if model.gate == "dselect_k":
        return DSelectKGate(in_features, num_gates, num_experts, k=min(model.dselect_k, num_experts))
    return SoftmaxGate(in_features, num_gates, num_experts)


def _experts(model: ModelConfig, in_features: int, count: int, home: bool = False
             ) -> nn.Module | None:
    """``count`` batched experts (None for zero); HoME's norm and feature gate when asked."""
    if count == 0:
        return None
    experts = BatchedExperts(in_features, model.expert_layers, count,
                             normalize=home and model.expert_norm)
    if home and model.feature_gate:
        return GatedExperts(experts, FeatureGate(in_features, count, model.feature_gate_rank))
    return experts


def _mmoe(model: ModelConfig, in_features: int, tasks: list[str]) -> MMoE:
    experts = _experts(model, in_features, model.num_experts)
    assert experts is not None
    return MMoE(experts, _gate(model, in_features, model.num_experts, num_gates=len(tasks)))


def _shared_bottom(model: ModelConfig, in_features: int, tasks: list[str]) -> SharedBottom:
    return SharedBottom(MLP(in_features, model.expert_layers), len(tasks))


def _ple(model: ModelConfig, in_features: int, tasks: list[str]) -> PLE:
    levels, width = [], in_features
    k, shared_count = model.task_experts, model.num_experts
    for level in range(model.num_levels):
        shared = _experts(model, width, shared_count)
        assert shared is not None
        inner = level < model.num_levels - 1
        levels.append(CGCLevel(
            [_experts(model, width, k) for _ in tasks], shared,
            [_gate(model, width, k + shared_count) for _ in tasks],
            _gate(model, width, len(tasks) * k + shared_count) if inner else None))
        width = int(shared.output_dim)  # type: ignore[arg-type]
    return PLE(levels, len(tasks))


def _adatt(model: ModelConfig, in_features: int, tasks: list[str]) -> AdaTT:
    levels, width = [], in_features
    k, shared_count = max(1, model.task_experts), model.num_experts
    total = len(tasks) * k + shared_count
    for level in range(model.num_levels):
        own = [_experts(model, width, k) for _ in tasks]
        inner = level < model.num_levels - 1
        levels.append(AdaTTLevel(
            own, _experts(model, width, shared_count),  # type: ignore[arg-type]
            [_gate(model, width, total) for _ in tasks],
            _gate(model, width, total) if inner else None, residual=model.adatt_residual))
        width = model.expert_layers[-1]
    return AdaTT(levels, len(tasks))


def _home(model: ModelConfig, in_features: int, tasks: list[str]) -> HoME:
    groups = [list(g) for g in model.task_groups] or [list(tasks)]
    task_group = [next(i for i, g in enumerate(groups) if t in g) for t in tasks]
    n_global, n_group, n_task = model.num_experts, model.group_experts, model.task_experts
    hidden = model.expert_layers[-1]

    def self_gate(width: int, count: int) -> SelfGate | None:
        return SelfGate(width, count) if model.self_gate and count else None

    return HoME(
        task_group=task_group,
        global1=_experts(model, in_features, n_global, home=True),  # type: ignore[arg-type]
        groups1=[_experts(model, in_features, n_group, home=True) for _ in groups],
        global2=_experts(model, hidden, n_global, home=True),  # type: ignore[arg-type]
        groups2=[_experts(model, hidden, n_group, home=True) for _ in groups],
        tasks2=[_experts(model, hidden, n_task, home=True) for _ in tasks],
        group_gates=[_gate(model, in_features, n_global + n_group) for _ in groups],
        global_gate=_gate(model, in_features, n_global + n_group * len(groups)),
        task_gates=[_gate(model, hidden, n_global + n_group + n_task) for _ in tasks],
        group_self_gates=[self_gate(in_features, n_group) for _ in groups],
        task_self_gates=[self_gate(hidden, n_task) for _ in tasks],
    )


def _sparse_moe(model: ModelConfig, in_features: int, tasks: list[str]) -> TaskSparseMoE:
    return TaskSparseMoE(experts=BatchedExperts(in_features, model.expert_layers, model.num_experts),
                         in_features=in_features, num_tasks=len(tasks), k=model.moe_top_k,
                         routing=model.moe_routing, capacity_factor=model.moe_capacity_factor,
                         shared_router=model.moe_shared_router)


def _multitab(model: ModelConfig, in_features: int, tasks: list[str],
              blocks: list[int] | None = None) -> MultiTab:
    """One token per column block in ``blocks`` (the leading columns), then one per column left
    (the dense floats); ``build_dense_ranker`` passes the pooled features' widths. Without
    ``blocks`` every column is a token of its own."""
    blocks = blocks or []
    tokenizer = FeatureTokenizer(block_widths=blocks, num_scalars=in_features - sum(blocks),
                                 dim=model.multitab_dim)
    encoder = MultiTabTransformer(dim=model.multitab_dim, num_features=tokenizer.num_tokens,
                                  num_tasks=len(tasks), num_layers=model.multitab_layers,
                                  num_heads=model.multitab_heads,
                                  features_see_tasks=model.multitab_features_see_tasks)
    return MultiTab(tokenizer=tokenizer, encoder=encoder)


def _dtrn(model: ModelConfig, in_features: int, tasks: list[str], blocks: list[int] | None = None,
          task_blocks: list[int] | None = None) -> DTRN:
    """Fields: one per column block in ``blocks`` (those in ``task_blocks`` hold one part per
    task), then one per column left; ``model.dtrn.backbone`` reads each task's bottom, with
    its own pair products when ``model.interaction`` is dot (the ranker's interaction is then
    none: ``build_interaction``)."""
    blocks, task_blocks = blocks or [], task_blocks or []
    num_scalars = in_features - sum(blocks)
    t = len(tasks)
    senet = TaskSENet(num_fields=len(blocks) + num_scalars, num_tasks=t,
                      reduction=model.dtrn.se_reduction, gate=model.dtrn.se_gate)
    pairs = model.interaction == "dot" and len(blocks) > 1
    width = task_width(blocks, task_blocks, num_scalars, t, pairs)
    return DTRN(block_widths=blocks, task_blocks=task_blocks, num_scalars=num_scalars,
                num_tasks=t, senet=senet, pairs=pairs,
                backbone=BACKBONES[model.dtrn.backbone](model, width, tasks))


def _infnet(model: ModelConfig, in_features: int, tasks: list[str],
            blocks: list[int] | None = None,
            sequence_blocks: dict[int, tuple[int, int]] | None = None) -> INFNet:
    """Categorical tokens from ``blocks`` (but ``sequence_blocks``, a history's ``(L, D)``
    slots) and the columns left; without ``blocks`` every column is a token."""
    blocks = blocks or []
    m = model.infnet
    return INFNet(block_widths=blocks, sequence_blocks=sequence_blocks or {},
                  num_scalars=in_features - sum(blocks), num_tasks=len(tasks), dim=m.dim,
                  num_layers=m.num_layers, num_heads=m.num_heads, num_proxies=m.num_proxies,
                  hidden=m.pgu_hidden, task_reads=m.task_reads)


# Keyed by the config's ``Architecture`` choices: the one list of architectures is that type.
BACKBONES: dict[Architecture, Callable[[ModelConfig, int, list[str]], nn.Module]] = {
    "shared_bottom": _shared_bottom,
    "mmoe": _mmoe,
    "ple": _ple,
    "home": _home,
    "adatt": _adatt,
    "sparse_moe": _sparse_moe,
    "multitab": _multitab,
    "dtrn": _dtrn,
    "infnet": _infnet,
}
if set(BACKBONES) != set(ARCHITECTURES):  # a new Architecture choice needs its builder here
    raise ImportError(f"builder.BACKBONES {sorted(BACKBONES)} != config {sorted(ARCHITECTURES)}")


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
    if cfg.model.arch == "infnet":  # the items themselves, as tokens
        return SequenceTokens(embedding_dim=dim, max_len=seq.max_len)
    if cfg.model.arch == "dtrn":  # one interest per task: [B, T * D]
        return TaskInterest(embedding_dim=dim, hidden_dims=seq.attention_layers,
                            num_tasks=len(cfg.base_tasks()), task_dim=cfg.model.dtrn.task_dim,
                            rank=cfg.model.dtrn.rank, normalize=seq.normalize,
                            shared_init=cfg.model.dtrn.hyper_init == "shared")
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
    table's dim (a sequence's encoder pools its history into the same width; under dtrn, one
    such interest per task; under infnet, a history is its ``max_len`` slots of ``dim + 1``)."""
    dims = {t.name: t.dim for t in cfg.features.tables}

    def width(f: SparseFeatureConfig) -> int:
        if f.sequence is None:
            return dims[f.table]
        if cfg.model.arch == "dtrn":
            return dims[f.table] * len(cfg.base_tasks())
        if cfg.model.arch == "infnet":
            return f.sequence.max_len * (dims[f.table] + 1)
        return dims[f.table]

    return [width(f) for f in cfg.features.sparse]


def pooled_width(cfg: Config) -> int:
    return sum(feature_widths(cfg))


def build_interaction(cfg: Config) -> nn.Module:
    """The ranker's interaction of the pooled embeddings (dtrn takes its dot products per
    task itself; under infnet the histories' item slots are not paired)."""
    if cfg.model.interaction == "none" or cfg.model.arch == "dtrn":
        return nn.Identity()
    dims = {t.name: t.dim for t in cfg.features.tables}
    dim = dims[cfg.features.sparse[0].table]
    if cfg.model.arch == "infnet" and any(f.sequence for f in cfg.features.sparse):
        paired = [i for i, f in enumerate(cfg.features.sparse) if f.sequence is None]
        return DotInteraction(len(paired), dim, block_widths=feature_widths(cfg),
                              features=paired)
    return DotInteraction(len(cfg.features.sparse), dim)


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


def build_dense_ranker(cfg: Config, numeric_edges: list[list[float]] | None = None) -> DenseRanker:
    tasks = cfg.base_tasks()
    interaction = build_interaction(cfg)
    numeric = build_numeric_encoder(cfg, numeric_edges)
    dense_width = int(numeric.output_dim) if numeric is not None else len(cfg.features.dense)  # type: ignore[arg-type]
    in_features = int(getattr(interaction, "output_dim", pooled_width(cfg))) + dense_width
    if cfg.model.arch == "multitab":  # a token per feature, not per column
        backbone: nn.Module = _multitab(cfg.model, in_features, tasks,
                                        input_blocks(cfg, interaction))
    elif cfg.model.arch == "dtrn":  # a field per feature; a task's own interest per sequence
        backbone = _dtrn(cfg.model, in_features, tasks, input_blocks(cfg, interaction),
                         [i for i, f in enumerate(cfg.features.sparse) if f.sequence is not None])
    elif cfg.model.arch == "infnet":  # categorical tokens per feature, a history's items
        dims = {t.name: t.dim for t in cfg.features.tables}
        backbone = _infnet(cfg.model, in_features, tasks, input_blocks(cfg, interaction),
                           {i: (f.sequence.max_len, dims[f.table])
                            for i, f in enumerate(cfg.features.sparse) if f.sequence is not None})
    else:
        backbone = BACKBONES[cfg.model.arch](cfg.model, in_features, tasks)
    width = int(backbone.output_dim)  # type: ignore[arg-type]
    towers = [MLP(width, cfg.model.tower_layers) for _ in tasks]
    transfer = (AITMTransfer(towers[0].output_dim, len(tasks))
                if cfg.model.transfer == "aitm" else None)
    aux = {imputation_output(t.name): t.name for t in cfg.tasks if t.escm2 == "dr"}
    return DenseRanker(interaction, backbone, towers, tasks, transfer=transfer, aux_outputs=aux,
                       dense_encoder=numeric)


def build_model(cfg: Config, embedding_device: str | torch.device = "cpu",
                seed: int | None = None,
                numeric_edges: list[list[float]] | None = None) -> MultiTaskRanker:
    """The full model. ``embedding_device="meta"`` leaves tables unallocated for DMP to shard.

    Dense weights are drawn from ``seed`` (default ``cfg.seed``), so every rank starts equal.
    ``numeric_edges``: see ``build_numeric_encoder``.
    """
    torch.manual_seed(cfg.seed if seed is None else seed)
    dense_ranker = build_dense_ranker(cfg, numeric_edges)
    bags, unpooled = embedding_configs(cfg), sequence_embedding_configs(cfg)
    device = torch.device(embedding_device)
    embeddings = EmbeddingBagCollection(tables=bags, device=device) if bags else None
    sequence_embeddings = EmbeddingCollection(tables=unpooled, device=device) if unpooled else None
    log_vars = len(cfg.tasks) if cfg.loss.weighting == "uncertainty" else 0
    return MultiTaskRanker(embeddings, dense_ranker, [f.name for f in cfg.features.sparse],
                           num_loss_log_vars=log_vars, managed_ids=build_managed_ids(cfg),
                           sequence_embeddings=sequence_embeddings,
                           sequence_features=build_sequence_features(cfg))
