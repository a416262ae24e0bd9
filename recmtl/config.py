"""Typed, frozen run configuration loaded from YAML, validated before any compute.

Every YAML file maps onto the dataclasses below. Unknown keys, wrong types and broken
cross-references are errors that name the key and the file. Command-line overrides use dotted
keys (``train.epochs=2``) and are parsed as YAML scalars.

Example:
    >>> cfg = load_config("configs/demo.yaml", ["train.epochs=2"])
    >>> cfg.train.epochs
    2
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and the source."""


@dataclass(frozen=True)
class TableConfig:
    """One embedding table; several sparse features may share it.

    ``sharding``: the sharding types the planner may choose for this table (table_wise,
    row_wise, column_wise, table_column_wise, table_row_wise, data_parallel; empty: every
    model-parallel type the device offers). ``optimizer`` / ``lr``: this table's fused
    optimizer (default: ``train.sparse_optimizer`` / ``train.sparse_lr``).
    """

    name: str
    num_embeddings: int
    dim: int
    pooling: str = "sum"  # sum | mean
    sharding: tuple[str, ...] = ()
    optimizer: str | None = None
    lr: float | None = None


@dataclass(frozen=True)
class SparseFeatureConfig:
    """A sparse id column. ``multi_valued`` columns are Parquet lists of ids."""

    name: str
    table: str
    multi_valued: bool = False


@dataclass(frozen=True)
class FeaturesConfig:
    tables: tuple[TableConfig, ...]
    sparse: tuple[SparseFeatureConfig, ...]
    dense: tuple[str, ...]
    group: str | None = None  # column used as GAUC group (user id)


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
    kind: str = "binary"  # binary | regression
    space: str | None = None
    product_of: tuple[str, ...] = ()
    oracle: str | None = None
    escm2: str = "none"  # none | ips | dr


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
    """

    arch: str = "mmoe"
    interaction: str = "dot"  # dot (pairwise dot products of pooled embeddings) | none
    num_experts: int = 4
    expert_layers: tuple[int, ...] = (128, 64)
    tower_layers: tuple[int, ...] = (64,)
    num_levels: int = 2
    task_experts: int = 1
    gate: str = "softmax"  # softmax | dselect_k
    dselect_k: int = 2
    group_experts: int = 1
    task_groups: tuple[tuple[str, ...], ...] = ()  # HoME meta-categories; empty: one group of all
    expert_norm: bool = True  # HoME: experts as Swish(BatchNorm(Linear)); false: ReLU(Linear)
    feature_gate: bool = True  # HoME: each expert reads x * 2 sigmoid(x B A), starting at 1
    feature_gate_rank: int = 4
    self_gate: bool = True  # HoME: residual of each group's/task's own experts between levels
    adatt_residual: bool = True
    transfer: str = "none"  # none | aitm


@dataclass(frozen=True)
class LossConfig:
    """How the per-task losses combine.

    ``weighting``: fixed (``tasks[].loss_weight``), uncertainty (Kendall et al. 2018: learned
    ``exp(-s_t) L_t + s_t``, times the fixed weights) or pcgrad (Yu et al. 2020: the per-task
    gradients of the shared dense parameters are projected off each other where they
    conflict). ``calibrator_weight``: AITM's penalty ``max(p_t - p_{t-1}, 0)`` along the base
    tasks in order (a conversion is never likelier than the click before it).
    """

    weighting: str = "fixed"  # fixed | uncertainty | pcgrad
    calibrator_weight: float = 0.0
    propensity_clip: float = 0.05


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/demo"  # local path or any pyarrow filesystem URI; holds train/ valid/ test/
    batch_size: int = 4096  # global batch: each of W workers takes batch_size / W rows a step
    eval_batch_size: int = 16384
    shuffle: bool = True
    prefetch: int = 2  # training batches built ahead in a background thread


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the embedded synthetic impression -> click -> conversion feature store."""

    train_rows: int = 2_000_000
    valid_rows: int = 100_000
    test_rows: int = 100_000
    rows_per_file: int = 250_000
    row_group_size: int = 32_768
    num_users: int = 100_000
    num_items: int = 50_000
    num_categories: int = 200
    num_segments: int = 64
    latent_dim: int = 8
    extra_sparse: tuple[int, ...] = ()  # cardinalities of extra context ids ctx_0, ctx_1, ...
    extra_dense: int = 0  # extra dense columns dense_0, dense_1, ... (carry no signal)


@dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule as a factor of the base rate: linear warm-up from 0 over
    ``warmup_steps``, then ``decay`` (constant | linear | cosine) down to ``final_factor`` at
    the last step of training."""

    warmup_steps: int = 0
    decay: str = "constant"
    final_factor: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """``ray_address``: join this Ray cluster (else ``$RAY_ADDRESS``, else start a local one).
    Each worker asks Ray for ``cpus_per_worker`` CPUs and, on cuda, ``gpus_per_worker`` GPUs."""

    num_workers: int = 2
    epochs: int = 1
    device: str = "cpu"  # cpu | cuda: the same code path, gloo or NCCL picked from it
    ray_address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    dense_lr: float = 0.01
    # rowwise_adagrad | adagrad | sgd; adam too on cuda (fbgemm has no fused CPU Adam)
    sparse_optimizer: str = "rowwise_adagrad"
    sparse_lr: float = 0.1
    # Autocast the forward to bfloat16 (the dense matmuls; embedding lookups and the loss stay
    # float32). Meant for GPUs; it runs on CPU too, usually slower there.
    bf16: bool = False
    # sparse_dist: torchrec's TrainPipelineSparseDist overlaps the id all-to-all of the next
    # batch with this one's forward and backward; none: the plain step (phase timings, PCGrad)
    pipeline: str = "none"
    dense_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sparse_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    log_every: int = 20
    max_steps_per_epoch: int | None = None
    checkpoint_every_steps: int | None = None  # also checkpoint mid-epoch every N steps
    max_failures: int = 0  # Ray restarts the workers from the latest checkpoint this often
    # Fault drill: the last rank SIGKILLs itself once at this global step, to rehearse recovery.
    kill_worker_at_step: int | None = None


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite in output_dir
    experiment: str = "recmtl"
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
    """

    slices: tuple[str, ...] = ()
    bootstrap: int = 200
    max_slices: int = 50
    save_predictions: bool = False


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

    def task(self, name: str) -> TaskConfig:
        return next(t for t in self.tasks if t.name == name)

    def base_tasks(self) -> list[str]:
        """Tasks with their own tower (not composed from others), in config order."""
        return [t.name for t in self.tasks if not t.product_of]

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
ARCHITECTURES = ("shared_bottom", "mmoe", "ple", "home", "adatt")
GATES = ("softmax", "dselect_k")
TRANSFERS = ("none", "aitm")
TASK_KINDS = ("binary", "regression")
ESCM2 = ("none", "ips", "dr")
WEIGHTINGS = ("fixed", "uncertainty", "pcgrad")
INTERACTIONS = ("dot", "none")
SPARSE_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd", "adam")
SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "table_column_wise", "table_row_wise",
                  "data_parallel")
DECAYS = ("constant", "linear", "cosine")
POOLINGS = ("sum", "mean")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; anything else is a ``ConfigError``."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a YAML file, applies ``dotted.key=value`` overrides and validates the result."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    raw = _resolve_base(raw, path, seen=(path.resolve(),))
    for item in overrides:
        _apply_override(raw, item, path)
    return config_from_dict(raw, source=str(path))


def _resolve_base(raw: dict[str, Any], path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """``base: other.yaml`` (relative to this file): start from that file, then merge this one
    over it (mappings merge key by key, anything else replaces)."""
    if "base" not in raw:
        return raw
    base_path = (path.parent / str(raw.pop("base"))).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: base {base_path} is included in a cycle")
    try:
        base = yaml.safe_load(base_path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read base {base_path}: {e}") from e
    return _merge(_resolve_base(base, base_path, (*seen, base_path)), raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    cfg = _build(Config, raw, "", source)
    _check(cfg, source)
    return cfg


def _apply_override(raw: dict[str, Any], item: str, source: Path) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected dotted.key=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section in {source}")
    node[parts[-1]] = yaml.safe_load(value)


def build_dataclass(tp: Any, raw: dict[str, Any], source: str) -> Any:
    """Any frozen config dataclass from a mapping, with this module's type checks and errors."""
    return _build(tp, raw, "", source)


def _build(tp: Any, value: Any, key: str, source: str) -> Any:
    where = f"{source}: key {key or '<root>'!r}"
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        kwargs = {}
        for name, f in fields.items():
            sub = f"{key}.{name}" if key else name
            if name in value:
                kwargs[name] = _build(hints[name], value[name], sub, source)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: key {sub!r} is required")
        return tp(**kwargs)  # type: ignore[operator]
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value, key, source)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (inner, _) = typing.get_args(tp)
        return tuple(_build(inner, v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML reads 1e-3 (no dot) as a string
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")


def _check(cfg: Config, source: str) -> None:
    def fail(msg: str) -> None:
        raise ConfigError(f"{source}: {msg}")

    tables = {t.name: t for t in cfg.features.tables}
    if len(tables) != len(cfg.features.tables):
        fail("features.tables: duplicate table name")
    for t in cfg.features.tables:
        if t.num_embeddings <= 0 or t.dim <= 0:
            fail(f"features.tables.{t.name}: num_embeddings and dim must be positive")
        if t.pooling not in POOLINGS:
            fail(f"features.tables.{t.name}.pooling: {t.pooling!r} not in {POOLINGS}")
    names = [f.name for f in cfg.features.sparse]
    if len(set(names)) != len(names):
        fail("features.sparse: duplicate feature name")
    for f in cfg.features.sparse:
        if f.table not in tables:
            fail(f"features.sparse.{f.name}.table: unknown table {f.table!r}")
    if not cfg.features.sparse:
        fail("features.sparse: at least one sparse feature is required")
    seen: set[str] = set()
    for task in cfg.tasks:
        if task.name in seen:
            fail(f"tasks: duplicate task {task.name!r}")
        if task.loss_weight < 0:
            fail(f"tasks.{task.name}.loss_weight: must be >= 0")
        for part in task.product_of:
            if part not in seen:
                fail(f"tasks.{task.name}.product_of: {part!r} must be a task defined before it")
        seen.add(task.name)
    unknown_exports = sorted(set(cfg.export.tasks) - seen)
    if unknown_exports:
        fail(f"export.tasks: unknown task(s) {unknown_exports}")
    if not cfg.base_tasks():
        fail("tasks: at least one task must have its own tower")
    if cfg.model.arch not in ARCHITECTURES:
        fail(f"model.arch: {cfg.model.arch!r} not in {ARCHITECTURES}")
    if cfg.model.num_experts < 1 or cfg.model.num_levels < 1 or cfg.model.task_experts < 0:
        fail("model: num_experts and num_levels must be >= 1, task_experts >= 0")
    if not cfg.model.expert_layers:
        fail("model.expert_layers: at least one layer is required")
    _check_model_and_loss(cfg, fail)
    if cfg.model.interaction not in INTERACTIONS:
        fail(f"model.interaction: {cfg.model.interaction!r} not in {INTERACTIONS}")
    if cfg.model.interaction == "dot" and len({tables[f.table].dim for f in cfg.features.sparse}) > 1:
        fail("model.interaction: dot needs every sparse feature's table to have the same dim")
    for key, opt in [("train.sparse_optimizer", cfg.train.sparse_optimizer)] + [
            (f"features.tables.{t.name}.optimizer", t.optimizer) for t in cfg.features.tables
            if t.optimizer]:
        if opt not in SPARSE_OPTIMIZERS:
            fail(f"{key}: {opt!r} not in {SPARSE_OPTIMIZERS}")
        if opt == "adam" and cfg.train.device != "cuda":
            fail(f"{key}: adam is a fused embedding optimizer on cuda only (fbgemm's CPU kernels "
                 "offer rowwise_adagrad, adagrad and sgd)")
    for t in cfg.features.tables:
        bad = sorted(set(t.sharding) - set(SHARDING_TYPES))
        if bad:
            fail(f"features.tables.{t.name}.sharding: {bad} not in {SHARDING_TYPES}")
        if t.lr is not None and t.lr <= 0:
            fail(f"features.tables.{t.name}.lr: must be > 0")
    for key, sched in (("dense_schedule", cfg.train.dense_schedule),
                       ("sparse_schedule", cfg.train.sparse_schedule)):
        if sched.decay not in DECAYS or sched.warmup_steps < 0 or not 0 <= sched.final_factor <= 1:
            fail(f"train.{key}: decay in {DECAYS}, warmup_steps >= 0, 0 <= final_factor <= 1")
    if cfg.train.pipeline not in ("none", "sparse_dist"):
        fail(f"train.pipeline: {cfg.train.pipeline!r} not in ('none', 'sparse_dist')")
    if cfg.train.pipeline == "sparse_dist" and cfg.loss.weighting == "pcgrad":
        fail("loss.weighting: pcgrad needs the plain step (train.pipeline: none)")
    if cfg.train.cpus_per_worker <= 0 or cfg.train.gpus_per_worker < 0:
        fail("train: cpus_per_worker must be > 0 and gpus_per_worker >= 0")
    if cfg.train.device not in ("cpu", "cuda"):
        fail(f"train.device: {cfg.train.device!r} not in ('cpu', 'cuda')")
    if cfg.train.num_workers < 1 or cfg.train.epochs < 1 or cfg.data.batch_size < 1:
        fail("train.num_workers, train.epochs and data.batch_size must be >= 1")
    _check_evaluate(cfg.evaluate, fail)


def _check_evaluate(ev: EvaluateConfig, fail: typing.Callable[[str], None]) -> None:
    if ev.bootstrap < 0:
        fail(f"evaluate.bootstrap: {ev.bootstrap} must be >= 0 (0 turns the interval off)")
    if ev.max_slices < 1:
        fail(f"evaluate.max_slices: {ev.max_slices} must be >= 1")
    if len(set(ev.slices)) != len(ev.slices):
        fail(f"evaluate.slices: duplicate column in {list(ev.slices)}")
    if any(not c.strip() for c in ev.slices):
        fail("evaluate.slices: column names must not be empty")


def _check_model_and_loss(cfg: Config, fail: typing.Callable[[str], None]) -> None:
    model, tasks = cfg.model, {t.name: t for t in cfg.tasks}
    base = cfg.base_tasks()
    for name, value, allowed in (("model.gate", model.gate, GATES),
                                 ("model.transfer", model.transfer, TRANSFERS),
                                 ("loss.weighting", cfg.loss.weighting, WEIGHTINGS)):
        if value not in allowed:
            fail(f"{name}: {value!r} not in {allowed}")
    if model.gate == "dselect_k" and model.dselect_k < 1:
        fail("model.dselect_k: must be >= 1")
    if model.group_experts < 0 or model.feature_gate_rank < 1:
        fail("model: group_experts must be >= 0, feature_gate_rank >= 1")
    grouped = [name for group in model.task_groups for name in group]
    if model.task_groups and sorted(grouped) != sorted(base):
        fail(f"model.task_groups: must hold every base task {base} exactly once, got {grouped}")
    if model.transfer == "aitm" and len(base) < 2:
        fail("model.transfer: aitm needs at least two base tasks")
    if cfg.loss.calibrator_weight < 0 or not 0 < cfg.loss.propensity_clip <= 1:
        fail("loss: calibrator_weight must be >= 0 and 0 < propensity_clip <= 1")
    for t in cfg.tasks:
        where = f"tasks.{t.name}"
        if t.kind not in TASK_KINDS:
            fail(f"{where}.kind: {t.kind!r} not in {TASK_KINDS}")
        if t.escm2 not in ESCM2:
            fail(f"{where}.escm2: {t.escm2!r} not in {ESCM2}")
        if t.kind == "regression" and (t.product_of or t.escm2 != "none" or t.oracle):
            fail(f"{where}: a regression task cannot be composed, use escm2 or an oracle")
        if any(tasks[k].kind != "binary" for k in t.product_of):
            fail(f"{where}.product_of: only binary tasks compose into a probability")
        if t.escm2 != "none":
            if t.space is None or t.product_of:
                fail(f"{where}.escm2: needs a base task with a space (the CVR task)")
            if not [p for p in cfg.tasks if p.label == t.space and p.space is None
                    and not p.product_of and p.kind == "binary"]:
                fail(f"{where}.escm2: no base binary task over all rows has label {t.space!r} "
                     "(the propensity)")


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as strings (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
