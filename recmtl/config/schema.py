"""The run configuration: frozen, typed dataclasses, one per YAML section.

Closed choices are ``Literal`` types, so the loader (``loading.py``) rejects any other value
naming the key and the file; cross-field rules live in ``checks.py``. Derive a changed config
with ``loading.derive``, which validates the result like a loaded file.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from recmtl.config.bottoms import DTRNConfig, INFNetConfig
from recmtl.config.rmtl import RmtlConfig
from recmtl.config.synthetic import SyntheticConfig

Architecture = Literal["shared_bottom", "mmoe", "ple", "home", "adatt", "sparse_moe",
                       "multitab", "dtrn", "infnet"]
Gate = Literal["softmax", "dselect_k"]
MoeRouting = Literal["sample", "task"]
Transfer = Literal["none", "aitm"]
TaskKind = Literal["binary", "regression"]
Escm2 = Literal["none", "ips", "dr"]
Weighting = Literal["fixed", "uncertainty", "pcgrad", "rmtl"]
Interaction = Literal["dot", "none"]
NumericEncoding = Literal["none", "piecewise_linear", "periodic"]
SparseOptimizer = Literal["rowwise_adagrad", "adagrad", "sgd", "adam"]
ShardingType = Literal["table_wise", "row_wise", "column_wise", "table_column_wise",
                       "table_row_wise", "data_parallel"]
Decay = Literal["constant", "linear", "cosine"]
Pooling = Literal["sum", "mean"]
Device = Literal["cpu", "cuda"]
Pipeline = Literal["none", "sparse_dist"]
Placement = Literal["pack", "spread"]
Eviction = Literal["lfu", "lru", "distance_lfu"]
RowDecayMode = Literal["decoupled", "frequency"]
CalibrationMethod = Literal["none", "isotonic", "platt", "temperature"]
SequenceEncoderKind = Literal["din", "bst"]

ARCHITECTURES: tuple[str, ...] = typing.get_args(Architecture)


@dataclass(frozen=True)
class ManagedCollisionConfig:
    """An open id space for one table (torchrec's zero-collision MCH module): the column holds
    raw int64 ids in ``[0, 2**63 - 1)``, and each id seen often enough in training owns a row
    until evicted; an id without a row (never admitted, or evicted) reads the table's last row.

    ``eviction``: which ids lose their rows when the table is full (``lfu``: the least often
    seen, ``lru``: the least recently seen, ``distance_lfu``: counts decayed by the steps since
    last seen). ``eviction_interval``: training steps between admissions; ids are recorded
    meanwhile, so the first interval's ids all read the shared last row.
    """

    eviction: Eviction = "distance_lfu"
    eviction_interval: int = 10


@dataclass(frozen=True)
class TableConfig:
    """One embedding table; several sparse features may share it.

    ``sharding``: the sharding types the planner may choose for this table (table_wise,
    row_wise, column_wise, table_column_wise, table_row_wise, data_parallel; empty: every
    model-parallel type the device offers). ``optimizer`` / ``lr``: this table's fused
    optimizer (default: ``train.sparse_optimizer`` / ``train.sparse_lr``).
    ``managed_collision``: raw ids mapped to rows as they come (``num_embeddings`` slots, the
    last shared by ids without a row of their own), instead of ids already in range.
    ``weight_decay`` / ``weight_decay_mode``: decay of the rows each step looks up
    (``decoupled``: times ``1 - lr * wd``; ``frequency``: DIN's mini-batch aware form, times
    ``1 - lr * wd * k / n`` for a row seen ``k`` times in the batch and ``n`` times so far;
    ``recmtl.train.row_decay``).
    """

    name: str
    num_embeddings: int
    dim: int
    pooling: Pooling = "sum"
    sharding: tuple[ShardingType, ...] = ()
    optimizer: SparseOptimizer | None = None
    lr: float | None = None
    managed_collision: ManagedCollisionConfig | None = None
    weight_decay: float = 0.0
    weight_decay_mode: RowDecayMode = "decoupled"


@dataclass(frozen=True)
class SequenceConfig:
    """A behaviour sequence: a multi-valued feature read as a history (oldest id first, the
    most recent last) and pooled by attention with a candidate as query (docs/sequences.md).

    ``query``: the candidate, a single-valued feature of the same table (so both read the same
    rows). ``max_len``: the most recent ids kept. ``encoder``: din (DIN's target attention,
    Zhou et al. 2018) or bst (``num_layers`` transformer blocks of ``num_heads`` heads and a
    ``ffn_dim`` feed-forward over the history with recency positions, then target attention;
    Chen et al. 2019). ``attention_layers``: hidden widths of the target attention unit.
    ``normalize``: softmax attention weights (false: DIN's raw weights). ``dropout``: bst's.
    ``side``: multi-valued features aligned with the history by position (one id per event:
    its category, its age bucket), whose embeddings are added to the history's keys.
    """

    query: str
    max_len: int = 50
    encoder: SequenceEncoderKind = "din"
    normalize: bool = True
    attention_layers: tuple[int, ...] = (64, 32)
    num_heads: int = 2
    num_layers: int = 1
    ffn_dim: int = 64
    dropout: float = 0.0
    side: tuple[str, ...] = ()


@dataclass(frozen=True)
class SparseFeatureConfig:
    """A sparse id column. ``multi_valued`` columns are Parquet lists of ids (a null list
    reads as an empty one). ``sequence``: the list is a behaviour history (``SequenceConfig``)."""

    name: str
    table: str
    multi_valued: bool = False
    sequence: SequenceConfig | None = None


@dataclass(frozen=True)
class FeaturesConfig:
    tables: tuple[TableConfig, ...]
    sparse: tuple[SparseFeatureConfig, ...]
    dense: tuple[str, ...]
    group: str | None = None  # column used as GAUC group (user id)

    def sequence_tables(self) -> set[str]:
        """The tables any sequence feature or its side lists read (looked up unpooled)."""
        sides = {s for f in self.sparse if f.sequence is not None for s in f.sequence.side}
        return {f.table for f in self.sparse if f.sequence is not None or f.name in sides}


@dataclass(frozen=True)
class TaskConfig:
    """One prediction task.

    ``kind``: binary (sigmoid + BCE) or regression (the head's output itself, squared error;
    e.g. log watch time). ``space``: a label column that must be 1 for a row to belong to this
    task's sample space (CVR lives on clicked rows). ``product_of``: entire-space composition,
    the task's probability is the product of those tasks' probabilities (ESMM: ctcvr = ctr x
    cvr). ``oracle``: a column with the true probability, when the data carries one.
    ``escm2``: for a binary task with a ``space``, replace the naive loss on that space by an
    entire-space counterfactual one (ESCM2, Wang et al. SIGIR 2022): ``ips`` weights each
    in-space row by 1 / propensity, ``dr`` adds an imputation head (doubly robust). The
    propensity is the probability of the task whose label is ``space``, detached and clipped
    below at ``loss.propensity_clip``.
    """

    name: str
    label: str
    loss_weight: float = 1.0
    kind: TaskKind = "binary"
    space: str | None = None
    product_of: tuple[str, ...] = ()
    oracle: str | None = None
    escm2: Escm2 = "none"


@dataclass(frozen=True)
class ModelConfig:
    """The dense part: interaction -> backbone -> one tower per base task.

    ``arch``: shared_bottom (one MLP of ``expert_layers``), mmoe (``num_experts`` shared
    experts), ple (``num_levels`` CGC levels, each with ``task_experts`` per task and
    ``num_experts`` shared experts), home (two levels: ``num_experts`` global experts,
    ``group_experts`` per task group in ``task_groups``, ``task_experts`` per task; switches
    ``expert_norm``, ``feature_gate``, ``self_gate``), adatt (``num_levels`` fusion levels with
    ``task_experts`` per task and ``num_experts`` shared, a residual of the task's own experts
    when ``adatt_residual``). ``gate``: softmax or dselect_k (``dselect_k`` experts per gate,
    Hazimeh et al. 2021) for every gate of mmoe, ple, home and adatt. ``transfer``: aitm passes
    information from each base task's tower to the next one's (Xi et al. KDD 2021), in task order.

    sparse_moe: ``num_experts`` shared ReLU experts of ``expert_layers``; each task mixes its
    router's ``moe_top_k`` best experts by a softmax over their logits, and only chosen experts
    run. ``moe_routing``: task (each task its own top-k: k to k T experts per sample) or sample
    (one top-k per sample by the tasks' mean router probability: k experts per sample).
    ``moe_capacity_factor`` c: at most ``ceil(c * k * B / E)`` assignments per expert and batch
    (times T in task routing), first choices first, the rest dropped (null: no limit; it
    applies when serving too, so a row's score then depends on its batch).
    ``moe_shared_router``: one router over the input and a learned task embedding instead of
    one per task. The load-balancing loss (1 when uniform) enters the training loss times
    ``moe_balance_weight``.

    multitab: a transformer over feature tokens, ``multitab_dim`` wide: one per pooled sparse
    feature (its own linear map), one for the interaction's pair products (dot), one per dense
    float (its own ``x * w + b``), and one learned token per task that reads the features and
    not the other tasks; ``multitab_layers`` pre-norm blocks of ``multitab_heads`` heads.
    ``multitab_features_see_tasks``: feature tokens also attend to the task tokens.
    """

    arch: Architecture = "mmoe"
    interaction: Interaction = "dot"  # dot: pairwise dot products of pooled embeddings
    num_experts: int = 4
    expert_layers: tuple[int, ...] = (128, 64)
    tower_layers: tuple[int, ...] = (64,)
    num_levels: int = 2
    task_experts: int = 1
    gate: Gate = "softmax"
    dselect_k: int = 2
    group_experts: int = 1
    task_groups: tuple[tuple[str, ...], ...] = ()  # HoME meta-categories; empty: one group of all
    expert_norm: bool = True  # HoME: experts as Swish(BatchNorm(Linear)); false: ReLU(Linear)
    feature_gate: bool = True  # HoME: each expert reads x * 2 sigmoid(x B A), starting at 1
    feature_gate_rank: int = 4
    self_gate: bool = True  # HoME: residual of each group's/task's own experts between levels
    adatt_residual: bool = True
    transfer: Transfer = "none"
    moe_top_k: int = 2
    moe_routing: MoeRouting = "task"
    moe_capacity_factor: float | None = None
    moe_balance_weight: float = 0.01
    moe_shared_router: bool = False
    multitab_dim: int = 32
    multitab_layers: int = 2
    multitab_heads: int = 4
    multitab_features_see_tasks: bool = False
    dtrn: DTRNConfig = field(default_factory=DTRNConfig)  # arch dtrn: recmtl/config/bottoms.py
    infnet: INFNetConfig = field(default_factory=INFNetConfig)  # arch infnet: the same
    # Each dense float as a numeric_dim embedding instead of the plain float: piecewise_linear
    # (numeric_bins train-quantile bins, linear) or periodic (PLR: numeric_frequencies sin/cos
    # frequencies ~ N(0, numeric_sigma), linear, ReLU). See docs/models.md.
    numeric_encoding: NumericEncoding = "none"
    numeric_bins: int = 16
    numeric_dim: int = 8
    numeric_frequencies: int = 16
    numeric_sigma: float = 0.1


@dataclass(frozen=True)
class LossConfig:
    """How the per-task losses combine.

    ``weighting``: fixed (``tasks[].loss_weight``), uncertainty (Kendall et al. 2018: learned
    ``exp(-s_t) L_t + s_t``, times the fixed weights) or pcgrad (Yu et al. 2020: the per-task
    gradients of the shared dense parameters are projected off each other where they
    conflict) or rmtl (per-row weights from session critics, ``loss.rmtl``, ``recmtl.train.rmtl``).
    ``calibrator_weight``: AITM's penalty ``max(p_t - p_{t-1}, 0)`` along the base
    tasks in order (a conversion is never likelier than the click before it).
    """

    weighting: Weighting = "fixed"
    calibrator_weight: float = 0.0
    propensity_clip: float = 0.05
    rmtl: RmtlConfig = field(default_factory=RmtlConfig)


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/demo"  # local path or any pyarrow filesystem URI; holds train/ valid/ test/
    batch_size: int = 4096  # global batch: each of W workers takes batch_size / W rows a step
    eval_batch_size: int = 16384
    shuffle: bool = True
    prefetch: int = 2  # training batches built ahead in a background thread


@dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule as a factor of the base rate: linear warm-up from 0 over
    ``warmup_steps``, then ``decay`` (constant | linear | cosine) down to ``final_factor`` at
    the last step of training."""

    warmup_steps: int = 0
    decay: Decay = "constant"
    final_factor: float = 0.0


@dataclass(frozen=True)
class OovDropoutConfig:
    """Out-of-vocabulary dropout (``recmtl.data.oov``): in training batches only, each
    occurrence of a rare id of a vocabulary table (``recmtl prepare``'s ``vocab`` transform;
    rare: seen 1 .. ``max_count`` times in the preparation's train split) is replaced by the
    OOV id 0 with probability ``rate``, so the row every new id reads in evaluation and
    serving is trained. ``rate: 0`` turns it off; data without ``transforms.json`` has no
    vocabulary and is left as it is."""

    rate: float = 0.1
    max_count: int = 10


@dataclass(frozen=True)
class WarmStartConfig:
    """What a warm start (``--warm-start``, each day of the daily job) does to the optimizer
    state it carries over (``recmtl/train/warm_state.py``): ``sparse_state_scale`` multiplies
    the embedding tables' accumulators (row-wise Adagrad's sum of squared gradients; 0 starts
    them afresh, 1 keeps them); ``dense_state``: ``keep`` the dense optimizer's moments and step
    count, or ``reset`` them; ``dense_lr_scale`` / ``sparse_lr_scale``: the learning rates of a
    warm-started run, as a factor of ``dense_lr`` / ``sparse_lr`` (``pipelines/jobs/train.py``
    derives them, so the run's params show the rates it trained at)."""

    # 0.1: measured on two day generators (docs/daily.md, "Warm holds"): with the sums kept
    # whole, conversion lagged a model retrained on every day so far
    sparse_state_scale: float = 0.1
    dense_state: Literal["keep", "reset"] = "keep"
    dense_lr_scale: float = 1.0  # a warm-started run trains its dense part at this x dense_lr
    sparse_lr_scale: float = 1.0  # and its tables at this x sparse_lr


@dataclass(frozen=True)
class TrainConfig:
    """``ray_address``: join this Ray cluster (else ``$RAY_ADDRESS``, else start a local one).
    Each worker asks Ray for ``cpus_per_worker`` CPUs and, on cuda, ``gpus_per_worker`` GPUs."""

    num_workers: int = 2
    epochs: int = 1
    device: Device = "cpu"  # the same code path; gloo or NCCL is picked from it
    ray_address: str | None = None
    min_workers: int | None = None  # elastic: go on with as few as this after losing workers
    placement: Placement = "pack"  # spread: one worker per node as far as the nodes go
    storage_path: str | None = None  # Ray Train's checkpoints, a path all nodes reach or a URI
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    dense_lr: float = 0.01
    # rowwise_adagrad | adagrad | sgd; adam too on cuda (fbgemm has no fused CPU Adam)
    sparse_optimizer: SparseOptimizer = "rowwise_adagrad"
    sparse_lr: float = 0.1
    # Autocast the forward to bfloat16 (the dense matmuls; embedding lookups and the loss stay
    # float32). Meant for GPUs; it runs on CPU too, usually slower there.
    bf16: bool = False
    # sparse_dist: torchrec's TrainPipelineSparseDist overlaps the id all-to-all of the next
    # batch with this one's forward and backward; none: the plain step (phase timings, PCGrad)
    pipeline: Pipeline = "none"
    dense_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sparse_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    log_every: int = 20
    max_steps_per_epoch: int | None = None
    checkpoint_every_steps: int | None = None  # also checkpoint mid-epoch every N steps
    max_failures: int = 0  # Ray restarts the workers from the latest checkpoint this often
    # Fault drill: the last rank SIGKILLs itself once at this global step, to rehearse recovery.
    kill_worker_at_step: int | None = None
    # Node drill: every rank holds at this global step (once) for a node to be killed outside.
    node_drill_at_step: int | None = None
    oov_dropout: OovDropoutConfig = field(default_factory=OovDropoutConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite in output_dir
    experiment: str = "recmtl"
    artifact_location: str | None = None  # a new experiment's artifacts (s3://b/p); None: default
    registered_model_name: str | None = None  # register the logged bundle model under it
    system_metrics: bool = True  # CPU, memory, disk, network (and GPU) of the driver's machine
    system_metrics_interval_s: float = 10.0


@dataclass(frozen=True)
class ExportConfig:
    """What goes into the serving bundle. ``tasks``: the towers to serve (empty: all)."""

    parity_rows: int = 4096
    parity_atol: float = 1e-5
    tasks: tuple[str, ...] = ()
    onnx: bool = True
    aot_inductor: bool = False  # compile the dense part ahead of time (~30 s more)
    parquet_tables: bool = False  # also write each table as Parquet (id, vector) for a KV store


@dataclass(frozen=True)
class EvaluateConfig:
    """Offline evaluation (``recmtl evaluate``, and the report at the end of ``train``).

    ``slices``: categorical columns of the data to break AUC and volume down by, per task in
    its own sample space (``recmtl evaluate --slice COLUMN`` adds one). Each column keeps its
    ``max_slices`` largest values by rows; the other values are pooled into one ``other``
    entry that says how many values it holds. ``bootstrap``: resamples for the AUC interval
    (0: none). ``save_predictions``: also write ``predictions.parquet`` (labels and per-task
    scores, one row per data row in data order) so ``recmtl compare`` can pair two runs.

    ``calibration``: a post-hoc calibrator per base binary task, fit on the valid split's
    logits in the task's sample space after training (isotonic, platt, or temperature: scale
    and bias); composed tasks become the product of their calibrated parts. The report shows
    before and after; the bundle serves the calibrated probabilities (docs/calibration.md).
    ``calibration_max_knots``: at most this many isotonic knots (null: every knot of the fit).
    """

    slices: tuple[str, ...] = ()
    bootstrap: int = 200
    max_slices: int = 50
    save_predictions: bool = False
    calibration: CalibrationMethod = "none"
    calibration_max_knots: int | None = 100


@dataclass(frozen=True)
class DailyConfig:
    """`recmtl daily CONFIG`: one model continued day over day (pipelines/jobs/daily.py).

    For each day d of the window: `recmtl prepare` the raw exports of day d (train; its last
    ``valid_hours`` validate) and day d + 1 (test) with ``spec``, starting from day d - 1's
    preparation; train warm-started from day d - 1's model; score it and the current
    ``alias`` model on day d + 1's raw rows (progressive validation: a model is always tested
    on the day after its data); register the version with its lineage and move ``alias`` to
    it unless some task in ``promote_tasks`` (empty: every binary task) loses more than
    ``promote_tolerance`` AUC against the current one.
    """

    # the raw export: a directory or URI of Hive partitions <key>=<date>/ (part files each),
    # or of day-NNNN.parquet files (pipelines/feature_store/partitions.py)
    raw: str = ""
    spec: str = ""  # the feature schema (`recmtl prepare`); relative paths from the config file
    work_dir: str = "runs/daily"  # prepared data per day and daily.json
    first_day: int = 0  # day-NNNN: the first day's number; Hive: its position by date
    first_date: str = ""  # Hive: the first day's date (2026-11-01), instead of first_day
    days: int = 0  # 0: every day that has a next day
    valid_hours: float = 4.0
    promote_tolerance: float = 0.002
    promote_tasks: tuple[str, ...] = ()
    alias: str = "champion"
    # Replay: each day also trains on the rows of this many days before it (from the export),
    # so a model continued day over day keeps seeing more than its last day.
    replay_days: int = 0


@dataclass(frozen=True)
class Config:
    name: str
    features: FeaturesConfig
    tasks: tuple[TaskConfig, ...]
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    daily: DailyConfig = field(default_factory=DailyConfig)

    def task(self, name: str) -> TaskConfig:
        return next(t for t in self.tasks if t.name == name)

    def base_tasks(self) -> list[str]:
        """Tasks with their own tower (not composed from others), in config order."""
        return [t.name for t in self.tasks if not t.product_of]

    def rmtl_tasks(self) -> list[str]:
        return rmtl_tasks(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able values (tuples become lists); ``config_from_dict`` reads it back."""
        return to_plain(dataclasses.asdict(self))


def rmtl_tasks(tasks: Sequence[TaskConfig]) -> list[str]:
    """The tasks ``loss.weighting: rmtl`` weights: binary, over all rows, without escm2, with a
    non-zero ``loss_weight`` (CTR and CTCVR in the paper), in config order."""
    return [t.name for t in tasks if t.kind == "binary" and t.space is None
            and t.escm2 == "none" and t.loss_weight]


def to_plain(value: Any) -> Any:
    """Dataclasses as dicts and tuples as lists, all the way down: what YAML holds."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


