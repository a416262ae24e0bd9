"""Cross-field rules of a ``Config`` (types and closed choices are checked while loading)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from recmtl.config.multitask import check_multitask
from recmtl.config.rmtl import RmtlConfig
from recmtl.config.schema import (
    Config,
    DailyConfig,
    EvaluateConfig,
    ModelConfig,
    SyntheticConfig,
)
from recmtl.errors import ConfigError

Fail = Callable[[str], None]


def check_config(cfg: Config, source: str) -> None:
    """Raises ``ConfigError`` naming ``source`` and the key for the first broken rule."""

    def fail(msg: str) -> None:
        raise ConfigError(f"{source}: {msg}")

    _check_features(cfg, fail)
    _check_sequences(cfg, fail)
    _check_tasks(cfg, fail)
    _check_model_and_loss(cfg, fail)
    _check_sparse_moe_and_multitab(cfg.model, fail)
    _check_bottoms(cfg, fail)
    _check_train(cfg, fail)
    _check_evaluate(cfg.evaluate, fail)
    _check_calibration(cfg, fail)
    _check_synthetic_days(cfg.synthetic, fail)
    _check_daily(cfg.daily, fail)
    _check_storage(cfg, fail)
    cfg.synthetic.longtail.check(fail)
    syn = cfg.synthetic
    if syn.kind == "multitask":
        check_multitask(syn.multitask, syn.latent_dim, syn.days,
                        {"synthetic.num_users": syn.num_users, "synthetic.num_items":
                         syn.num_items, "synthetic.num_categories": syn.num_categories}, fail)
    if syn.kind == "shifts":
        syn.shifts.check(syn.num_categories, syn.days, fail)


def _check_features(cfg: Config, fail: Fail) -> None:
    tables = {t.name: t for t in cfg.features.tables}
    if len(tables) != len(cfg.features.tables):
        fail("features.tables: duplicate table name")
    for t in cfg.features.tables:
        if t.num_embeddings <= 0 or t.dim <= 0:
            fail(f"features.tables.{t.name}: num_embeddings and dim must be positive")
        if t.lr is not None and t.lr <= 0:
            fail(f"features.tables.{t.name}.lr: must be > 0")
        if t.weight_decay < 0:
            fail(f"features.tables.{t.name}.weight_decay: must be >= 0")
        if t.weight_decay and cfg.train.pipeline == "sparse_dist":
            fail(f"features.tables.{t.name}.weight_decay: rows decay before the step's "
                 "lookup, which train.pipeline: sparse_dist runs ahead; use train.pipeline: none")
        mc = t.managed_collision
        if mc is not None and (t.num_embeddings < 2 or mc.eviction_interval < 1):
            fail(f"features.tables.{t.name}.managed_collision: needs num_embeddings >= 2 (the "
                 "last row is shared by ids without one) and eviction_interval >= 1")
        if mc is not None and cfg.train.pipeline == "sparse_dist":
            fail(f"features.tables.{t.name}.managed_collision: ids are mapped to rows before "
                 "the lookup, which train.pipeline: sparse_dist skips; use train.pipeline: none")
    names = [f.name for f in cfg.features.sparse]
    if len(set(names)) != len(names):
        fail("features.sparse: duplicate feature name")
    for f in cfg.features.sparse:
        if f.table not in tables:
            fail(f"features.sparse.{f.name}.table: unknown table {f.table!r}")
    if not cfg.features.sparse:
        fail("features.sparse: at least one sparse feature is required")
    if cfg.model.interaction == "dot" and len({tables[f.table].dim for f in cfg.features.sparse}) > 1:
        fail("model.interaction: dot needs every sparse feature's table to have the same dim")


def _check_sequences(cfg: Config, fail: Fail) -> None:
    """A sequence is a multi-valued feature whose candidate (``query``) is a single-valued
    feature of the same table; its tables are looked up unpooled (a torchrec
    ``EmbeddingCollection``, which needs one dim for all of them)."""
    features = {f.name: f for f in cfg.features.sparse}
    tables = {t.name: t for t in cfg.features.tables}
    for f in cfg.features.sparse:
        seq = f.sequence
        if seq is None:
            continue
        where = f"features.sparse.{f.name}.sequence"
        if not f.multi_valued:
            fail(f"{where}: a sequence must be multi_valued (a list of ids)")
        query = features.get(seq.query)
        if query is None:
            fail(f"{where}.query: unknown sparse feature {seq.query!r}")
        elif query.multi_valued or query.sequence is not None or query.table != f.table:
            fail(f"{where}.query: {seq.query!r} must be a single-valued feature of the same "
                 f"table {f.table!r} (the candidate the history is compared with)")
        if seq.max_len < 1 or seq.num_layers < 0 or seq.num_heads < 1 or seq.ffn_dim < 1:
            fail(f"{where}: max_len, num_heads and ffn_dim must be >= 1, num_layers >= 0")
        if not 0 <= seq.dropout < 1:
            fail(f"{where}.dropout: {seq.dropout} must be in [0, 1)")
        for side in seq.side:
            other = features.get(side)
            if (other is None or not other.multi_valued or other.sequence is not None
                    or side == f.name):
                fail(f"{where}.side: {side!r} must be a multi-valued feature that is not a "
                     "sequence (one id per event of the history, aligned by position)")
        if seq.encoder == "bst" and tables[f.table].dim % seq.num_heads:
            fail(f"{where}.num_heads: {seq.num_heads} must divide the dim of table {f.table!r} "
                 f"({tables[f.table].dim})")
    unpooled = cfg.features.sequence_tables()
    if len({tables[t].dim for t in unpooled}) > 1:
        fail(f"features.tables: the tables of sequence features {sorted(unpooled)} must share "
             "one dim (they live in one torchrec EmbeddingCollection)")
    for name in sorted(unpooled):
        t = tables[name]
        if t.managed_collision is not None or t.weight_decay:
            fail(f"features.tables.{name}: managed_collision and weight_decay are not built "
                 "for the tables of sequence features yet")


def _check_tasks(cfg: Config, fail: Fail) -> None:
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
    tasks = {t.name: t for t in cfg.tasks}
    for t in cfg.tasks:
        where = f"tasks.{t.name}"
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


def _check_model_and_loss(cfg: Config, fail: Fail) -> None:
    model, base = cfg.model, cfg.base_tasks()
    if model.num_experts < 1 or model.num_levels < 1 or model.task_experts < 0:
        fail("model: num_experts and num_levels must be >= 1, task_experts >= 0")
    if not model.expert_layers:
        fail("model.expert_layers: at least one layer is required")
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
    if cfg.loss.weighting == "rmtl":
        check_rmtl(cfg.loss.rmtl, cfg.rmtl_tasks(), cfg.features.group, cfg.train.pipeline,
                   fail)


def _check_sparse_moe_and_multitab(model: ModelConfig, fail: Fail) -> None:
    """The keys of the architecture in use (the others' defaults may not fit, e.g. top-2 of one
    expert under mmoe)."""
    if model.arch == "sparse_moe":
        if not 1 <= model.moe_top_k <= model.num_experts:
            fail(f"model.moe_top_k: {model.moe_top_k} must be in [1, model.num_experts = "
                 f"{model.num_experts}]")
        if model.moe_capacity_factor is not None and model.moe_capacity_factor <= 0:
            fail(f"model.moe_capacity_factor: {model.moe_capacity_factor} must be > 0, or null "
                 "for no limit")
        if model.moe_balance_weight < 0:
            fail(f"model.moe_balance_weight: {model.moe_balance_weight} must be >= 0")
    if model.numeric_encoding != "none":
        if (min(model.numeric_dim, model.numeric_bins, model.numeric_frequencies) < 1
                or not model.numeric_sigma > 0):
            fail("model: numeric_dim, numeric_bins and numeric_frequencies must be >= 1, "
                 "numeric_sigma > 0")
        if model.arch == "multitab":
            fail(f"model.numeric_encoding: {model.numeric_encoding} is not for multitab, which "
                 "gives each dense float its own token")
    if model.arch == "multitab":
        if model.multitab_dim < 1 or model.multitab_layers < 1 or model.multitab_heads < 1:
            fail("model: multitab_dim, multitab_layers and multitab_heads must be >= 1")
        if model.multitab_dim % model.multitab_heads:
            fail(f"model.multitab_heads: {model.multitab_heads} must divide model.multitab_dim "
                 f"= {model.multitab_dim}")


def _check_bottoms(cfg: Config, fail: Fail) -> None:
    """dtrn's and infnet's keys (with the dot interaction, dtrn pairs each task's own
    interest, infnet leaves the histories' items out of the pairs); bst's encoder is theirs
    neither."""
    sequences = [f for f in cfg.features.sparse if f.sequence is not None]
    if cfg.model.arch == "infnet":
        n = cfg.model.infnet
        if min(n.dim, n.num_layers, n.num_heads, n.num_proxies, n.pgu_hidden) < 1:
            fail("model.infnet: dim, num_layers, num_heads, num_proxies and pgu_hidden must "
                 "be >= 1")
        if n.dim % n.num_heads:
            fail(f"model.infnet.num_heads: {n.num_heads} must divide model.infnet.dim = {n.dim}")
        if cfg.model.numeric_encoding != "none":
            fail(f"model.numeric_encoding: {cfg.model.numeric_encoding} is not for infnet, which "
                 "gives each dense float its own token")
        for f in sequences:
            if f.sequence is not None and f.sequence.encoder != "din":
                fail(f"features.sparse.{f.name}.sequence.encoder: {f.sequence.encoder} is not "
                     "for infnet, which reads the history's items as tokens")
    if cfg.model.arch != "dtrn":
        return
    d = cfg.model.dtrn
    if d.task_dim < 1 or d.rank < 1 or not d.se_reduction > 0:
        fail("model.dtrn: task_dim and rank must be >= 1, se_reduction > 0")
    for f in sequences:
        if f.sequence is not None and f.sequence.encoder != "din":
            fail(f"features.sparse.{f.name}.sequence.encoder: {f.sequence.encoder} is not for "
                 "dtrn, whose hypernetwork generates a din attention unit per task")


def _check_train(cfg: Config, fail: Fail) -> None:
    train = cfg.train
    for key, opt in [("train.sparse_optimizer", train.sparse_optimizer)] + [
            (f"features.tables.{t.name}.optimizer", t.optimizer) for t in cfg.features.tables]:
        if opt == "adam" and train.device != "cuda":
            fail(f"{key}: adam is a fused embedding optimizer on cuda only (fbgemm's CPU kernels "
                 "offer rowwise_adagrad, adagrad and sgd)")
    for key, sched in (("dense_schedule", train.dense_schedule),
                       ("sparse_schedule", train.sparse_schedule)):
        if sched.warmup_steps < 0 or not 0 <= sched.final_factor <= 1:
            fail(f"train.{key}: warmup_steps >= 0 and 0 <= final_factor <= 1")
    if train.pipeline == "sparse_dist" and cfg.loss.weighting == "pcgrad":
        fail("loss.weighting: pcgrad needs the plain step (train.pipeline: none)")
    if not 0 <= train.oov_dropout.rate <= 1 or train.oov_dropout.max_count < 1:
        fail("train.oov_dropout: rate in [0, 1] and max_count >= 1")
    if train.warm_start.dense_lr_scale <= 0 or train.warm_start.sparse_lr_scale <= 0:
        fail("train.warm_start: dense_lr_scale and sparse_lr_scale must be > 0")
    if train.warm_start.sparse_state_scale < 0:
        fail("train.warm_start.sparse_state_scale: expected >= 0 (0 starts the accumulators "
             "afresh, 1 keeps them)")
    if train.cpus_per_worker <= 0 or train.gpus_per_worker < 0:
        fail("train: cpus_per_worker must be > 0 and gpus_per_worker >= 0")
    if train.num_workers < 1 or train.epochs < 1 or cfg.data.batch_size < 1:
        fail("train.num_workers, train.epochs and data.batch_size must be >= 1")
    if train.min_workers is not None and not 1 <= train.min_workers <= train.num_workers:
        fail(f"train.min_workers: {train.min_workers} must be in [1, train.num_workers = "
             f"{train.num_workers}]")


def _check_evaluate(ev: EvaluateConfig, fail: Fail) -> None:
    if ev.bootstrap < 0:
        fail(f"evaluate.bootstrap: {ev.bootstrap} must be >= 0 (0 turns the interval off)")
    if ev.max_slices < 1:
        fail(f"evaluate.max_slices: {ev.max_slices} must be >= 1")
    if len(set(ev.slices)) != len(ev.slices):
        fail(f"evaluate.slices: duplicate column in {list(ev.slices)}")
    if any(not c.strip() for c in ev.slices):
        fail("evaluate.slices: column names must not be empty")


def _check_calibration(cfg: Config, fail: Fail) -> None:
    ev = cfg.evaluate
    if ev.calibration_max_knots is not None and ev.calibration_max_knots < 2:
        fail(f"evaluate.calibration_max_knots: {ev.calibration_max_knots} must be >= 2 "
             "(both ends of the curve), or null for every knot")
    binary = [t.name for t in cfg.tasks if t.kind == "binary" and not t.product_of]
    if ev.calibration != "none" and not binary:
        fail(f"evaluate.calibration: {ev.calibration} calibrates binary tasks with a tower; "
             "there are none")


def _check_daily(daily: DailyConfig, fail: Fail) -> None:
    if daily.first_date:
        try:
            dt.date.fromisoformat(daily.first_date)
        except ValueError:
            fail(f"daily.first_date: {daily.first_date!r} is not a date; expected YYYY-MM-DD "
                 "or YYYYMMDD")
        if daily.first_day:
            fail("daily: give first_date or first_day, not both")
    if daily.first_day < 0 or daily.days < 0 or daily.replay_days < 0:
        fail("daily: first_day, days and replay_days must be >= 0")


def _check_synthetic_days(syn: SyntheticConfig, fail: Fail) -> None:
    if syn.kind == "sequences" and syn.days:
        fail("synthetic.kind: sequences writes train/valid/test splits, not daily exports "
             "(synthetic.days must be 0)")
    if syn.max_history_len < 0 or syn.mean_history_len < 0:
        fail("synthetic: max_history_len and mean_history_len must be >= 0")
    if syn.days < 0 or syn.rows_per_day < 1:
        fail("synthetic: days must be >= 0 and rows_per_day >= 1")
    if syn.new_items_per_day < 0 or syn.new_users_per_day < 0 or syn.popularity_drift < 0:
        fail("synthetic: new_items_per_day, new_users_per_day and popularity_drift must be >= 0")
    if not 0 <= syn.drift <= 1:
        fail(f"synthetic.drift: {syn.drift} must be in [0, 1] (the share of variance renewed a day)")
    if syn.item_half_life_days <= 0:
        fail(f"synthetic.item_half_life_days: {syn.item_half_life_days} must be > 0")


def _check_storage(cfg: Config, fail: Fail) -> None:
    """Locations are logged as MLflow params: credentials come from the environment only."""
    for key, where in (("data.root", cfg.data.root), ("train.storage_path", cfg.train.storage_path),
                       ("mlflow.artifact_location", cfg.mlflow.artifact_location),
                       ("mlflow.tracking_uri", cfg.mlflow.tracking_uri)):
        if where is not None and "://" in where and "@" in where.split("://", 1)[1].split("/")[0]:
            fail(f"{key}: a URI with credentials in it (user:secret@host); give the location "
                 "alone and the credentials in the environment (AWS_ACCESS_KEY_ID, "
                 "AWS_SECRET_ACCESS_KEY: docs/storage.md)")
        if where == "":
            fail(f"{key}: empty; leave it out for the default")


def check_rmtl(rm: RmtlConfig, weighted_tasks: list[str], group: str | None, pipeline: str,
               fail: Callable[[str], None]) -> None:
    """Cross-field rules of ``loss.weighting: rmtl``; ``weighted_tasks``: the tasks it weights
    (binary, over all rows, no escm2, non-zero ``loss_weight``)."""
    if group is None:
        fail("loss.weighting: rmtl needs features.group (the column whose rows form a session)")
    if not weighted_tasks:
        fail("loss.weighting: rmtl weights binary tasks over all rows (no space, no escm2) with "
             "a non-zero loss_weight; there are none")
    if pipeline != "none":
        fail("loss.weighting: rmtl needs the plain step (train.pipeline: none)")
    if rm.weight_lambda < 0 or not 0 <= rm.gamma < 1 or not 0 < rm.target_tau <= 1:
        fail("loss.rmtl: weight_lambda >= 0, 0 <= gamma < 1 and 0 < target_tau <= 1")
    if rm.critic_lr <= 0 or any(w < 1 for w in rm.critic_layers):
        fail("loss.rmtl: critic_lr must be > 0 and critic_layers widths >= 1")
