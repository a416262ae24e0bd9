"""`recmtl daily CONFIG`: one model continued over a window of days (``daily:`` in the config).

For each day d: prepare day d (+ day d + 1 as the test split) from day d - 1's preparation,
so known ids keep their rows; train warm-started from day d - 1's model; score the new model
and the current ``alias`` model on day d + 1's raw rows, each through its own bundle's
transforms (the same rows for both, whatever their vocabularies); register the version with
its lineage; promote it unless a gated task loses more than ``promote_tolerance`` AUC.

The job continues: run again over the same work directory, it trains only the days after the
last one it finished, and takes up a day it was stopped in (``daily_ledger.py``). One Ray and
one set of workers (``recmtl/train/pool.py``) serve every day of an invocation.
``<work_dir>/daily.json`` is rewritten as each day ends: per day the AUCs, the decision and
its reason, the seconds of each step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from mlflow.exceptions import MlflowException

from pipelines.feature_store.partitions import RawDay, check_days, find_days, read_rows, select
from pipelines.jobs.daily_ledger import Ledger
from pipelines.jobs.lineage import run_dir_of
from recmtl.config import Config, derive, load_config
from recmtl.config.loading import read_yaml_mapping
from recmtl.config.schema import DailyConfig
from recmtl.errors import ConfigError, DataError
from recmtl.metrics.auc import auc
from recmtl.storage import is_uri


@dataclass(frozen=True)
class Day:
    """Day ``index`` of the window: its raw partition and the next day's (the test rows)."""

    index: int
    raw: RawDay
    next_raw: RawDay

    @property
    def name(self) -> str:
        """Stable and readable: the date (``2026-11-01``), or ``day-NNNN`` for one file a day."""
        return self.raw.label


def window(cfg: Config, config_dir: Path) -> list[Day]:
    """The days to run, from ``first_date`` (or ``first_day``), ``days`` of them (0: every day
    that has a next day), each with its next day; a missing or empty day is an error that
    names it (``pipelines/feature_store/partitions.py``)."""
    raw = cfg.daily.raw if is_uri(cfg.daily.raw) else str(_path(cfg.daily.raw, config_dir))
    found = find_days(raw)
    if not found:
        raise ConfigError(f"daily.raw: no <key>=<date>/ partitions or day-NNNN.parquet files "
                          f"in {raw}")
    start = _first(found, cfg.daily, raw)
    count = cfg.daily.days or len(found) - start - 1
    chosen = found[start:start + count + 1]
    if count < 1 or len(chosen) < count + 1:
        first = found[start].label if start < len(found) else f"day {start}"
        raise DataError(f"{raw}: the window from {first} needs {max(count, 1) + 1} days (each "
                        f"with the next as its test day); the export holds {len(chosen)} from "
                        f"there, up to {found[-1].label}")
    check_days(chosen, raw)
    offset = start if found[0].key else 0  # Hive: days count from the export's first
    return [Day(d.number if not d.key else offset + i, d, n)
            for i, (d, n) in enumerate(zip(chosen, chosen[1:], strict=False))]


def _first(found: list[RawDay], daily_cfg: DailyConfig, raw: str) -> int:
    """The window's first day's position: ``first_date`` (a partition's date), or
    ``first_day`` (a day-NNNN number, or the position of a Hive partition by date)."""
    if daily_cfg.first_date:
        picked = select(found, (daily_cfg.first_date,), f"daily.first_date ({raw})")
        return found.index(picked[0])
    if found[0].key:
        return daily_cfg.first_day
    return next((i for i, d in enumerate(found) if d.number >= daily_cfg.first_day), len(found))


def daily(config_path: str | Path, overrides: list[str] | tuple[str, ...] = (),
          quiet: bool = True, redo: str | None = None) -> dict[str, Any]:
    """Runs the days of the window not yet done in ``daily.work_dir`` (``daily_ledger.py``),
    each continued from the last finished day, on one Ray and one set of workers; returns
    the ledger (also ``<work_dir>/daily.json``, rewritten as each day ends). ``redo``: a
    finished day to train again, with every day after it."""
    from recmtl.train.launch import ensure_ray
    from recmtl.train.pool import WorkerPool
    from recmtl.train.tracking import config_hash, resolve_tracking_uri

    cfg = load_config(config_path, overrides)
    config_dir = Path(config_path).resolve().parent
    if not cfg.daily.spec:
        raise ConfigError(f"{config_path}: daily.spec (the feature schema) is required")
    job = DailyJob(cfg, config_path, tuple(overrides), _path(cfg.daily.spec, config_dir),
                   Path(cfg.daily.work_dir).resolve(), config_hash(cfg), quiet)
    # the store the days' runs log to: theirs when the config names none (output_dir: runs/)
    tracking_uri = resolve_tracking_uri(derive(cfg, {"output_dir": str(job.work / "runs")}))
    ledger = Ledger.open(job.work, {"model": job.model_name, "alias": cfg.daily.alias,
                                    "tracking_uri": tracking_uri,
                                    "experiment": cfg.mlflow.experiment})
    if redo:
        ledger.redo(redo)
    full = window(cfg, config_dir)
    days = ledger.todo(full)
    if not days:
        last = ledger.last["name"] if ledger.last else None
        print(f"daily: nothing to do in {job.work}: every day of the window is done "
              f"(last: {last})", flush=True)
        return ledger.as_dict()
    t0 = time.perf_counter()
    ensure_ray(cfg.train.num_workers, cfg.train.ray_address, quiet=quiet)
    with WorkerPool(cfg.train) as pool:
        start_s = time.perf_counter() - t0
        for day in days:
            before = full[:full.index(day)][-cfg.daily.replay_days:] if cfg.daily.replay_days \
                else []
            result = job.run_day(day, ledger, pool, tuple(d.raw for d in before))
            result["seconds"]["workers_start"] = round(start_s, 2)
            start_s = 0.0  # paid once for the window
            ledger.finish(result)
            print(_day_line(result), flush=True)
    print(f"wrote {ledger.path}")
    return ledger.as_dict()


@dataclass(frozen=True)
class DailyJob:
    """One invocation's settings: the config, its spec, its work directory."""

    cfg: Config
    config_path: str | Path
    overrides: tuple[str, ...]
    spec: Path
    work: Path
    config_hash: str  # of the daily config: one value while the config stays the same
    quiet: bool

    @property
    def model_name(self) -> str:
        return self.cfg.mlflow.registered_model_name or self.cfg.name

    def run_day(self, day: Day, ledger: Ledger, pool: Any, replay: tuple[RawDay, ...] = ()
                ) -> dict[str, Any]:
        """Prepares, trains, scores and promotes ``day`` from the last finished day, taking
        up a day in progress where it stopped; returns the day's ledger entry. ``replay``:
        earlier days whose rows join the day's training rows (``daily.replay_days``)."""
        from mlflow.tracking import MlflowClient

        from pipelines.jobs.train import train

        seconds: dict[str, float] = {}
        previous = ledger.last
        current = ledger.current if ledger.current and ledger.current["name"] == day.name \
            else None
        t0 = time.perf_counter()
        if current is None:
            data_dir = prepare_day(day, self.spec, self.config_path, self.work,
                                   Path(previous["data"]) if previous else None,
                                   self.cfg.daily.valid_hours, replay)
            run_dir = self.work / "runs" / f"{self.cfg.name}-{day.name}-" \
                f"{time.strftime('%Y%m%d-%H%M%S')}"
            current = {"name": day.name, "data": str(data_dir), "run_dir": str(run_dir)}
            ledger.begin(current)
        seconds["prepare"] = time.perf_counter() - t0
        data_dir, run_dir = Path(current["data"]), Path(current["run_dir"])
        day_cfg = load_config(data_dir / f"{_spec_name(self.spec)}.yaml", [
            *self.overrides, f"mlflow.registered_model_name={self.model_name}",
            f"output_dir={self.work / 'runs'}", f"data.root={data_dir}"])
        window_tag = f"{day.raw.name}..{day.next_raw.name}"
        t0 = time.perf_counter()
        summary_path = run_dir / "summary.json"
        if summary_path.exists():  # trained, evaluated and registered before a stop
            summary = json.loads(summary_path.read_text())
        else:
            summary = train(day_cfg, quiet=self.quiet,
                            warm_start=previous["run_dir"] if previous else None,
                            tags={"recmtl.daily.day": day.name, "recmtl.data_window": window_tag,
                                  "recmtl.config_hash": self.config_hash},
                            pool=pool, run_dir=run_dir)
        seconds["train_job"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        client = MlflowClient(summary["tracking_uri"])
        decision = promote(client, self.model_name, summary, day, day_cfg, self.cfg.daily)
        seconds["promote"] = time.perf_counter() - t0
        seconds |= {"fit": summary["train_seconds"], "epoch": summary["epoch_seconds"] or 0.0}
        seconds["total"] = seconds["prepare"] + seconds["train_job"] + seconds["promote"]
        return {"name": day.name, "day": day.index, "window": window_tag,
                "data": str(data_dir), "run_dir": summary["run_dir"],
                "run_id": summary["run_id"], "model_version": summary["model_version"],
                "config_hash": self.config_hash,
                "warm_start": previous["run_dir"] if previous else None,
                "prepare_seconds": seconds["prepare"], "train_seconds": summary["train_seconds"],
                "epoch_seconds": summary["epoch_seconds"],
                "seconds": {k: round(v, 2) for k, v in seconds.items()}, **decision}


def _day_line(result: dict[str, Any]) -> str:
    s, new = result["seconds"], result.get("new_ids") or {}
    on_new = ", ".join(f"{t} {v:.4f}" for t, v in new.get("auc", {}).get("candidate", {}).items())
    new_text = f"; new ids {new['share']:.0%} of rows: {on_new or 'no AUC'}" if new else ""
    return (f"{result['name']}: {result['reason']}{new_text} [{s['total']:.0f} s: prepare "
            f"{s['prepare']:.0f}, train+evaluate+export {s['train_job']:.0f} (epoch "
            f"{s['epoch']:.0f}), promote {s['promote']:.0f}]")


def prepare_day(day: Day, spec_path: Path, config_path: str | Path, work: Path,
                previous: Path | None, valid_hours: float, history: tuple[RawDay, ...] = ()
                ) -> Path:
    """Day d's training store under ``work/<day name>/data``: train on day d up to its last
    ``valid_hours`` (and on the ``history`` days before it, when given), validate on those
    hours, test on day d + 1; from ``previous``'s vocabularies if given. `recmtl prepare`
    reads those days' files where they are (``days`` of the raw export: local or a URI)."""
    from pipelines.feature_store.prepare import prepare
    from pipelines.feature_store.spec import load_spec

    raw_spec = read_yaml_mapping(spec_path)
    split = dict(raw_spec.get("split") or {})
    if split.get("kind") != "time" or not split.get("column"):
        raise ConfigError(f"{spec_path}: the daily job needs a time split (split.kind: time, "
                          "split.column)")
    start = _day_start(day.raw, split["column"])
    day_ns = np.timedelta64(1, "D")
    split |= {"valid_from": str(start + day_ns - np.timedelta64(int(valid_hours * 3600), "s")),
              "test_from": str(start + day_ns)}
    out = work / day.name / "data"
    days = [d.label for d in (*history, day.raw, day.next_raw)]
    overrides: dict[str, Any] = {"source": day.raw.root, "days": days, "output": str(out),
                                 "split": split,
                                 "base_config": str(Path(config_path).resolve())}
    if previous is not None:
        overrides["previous"] = str(previous)
    prepare(load_spec(spec_path, overrides))
    return out


def raw_aucs(bundle: str | Path, rows: pa.Table, cfg: Config, tasks: list[str]) -> dict[str, float]:
    """AUC per task of a bundle on raw feature-store rows (its own transforms), each task in
    its sample space."""
    return task_aucs(raw_scores(bundle, rows), rows, cfg, tasks)


def raw_scores(bundle: str | Path, rows: pa.Table) -> dict[str, np.ndarray]:
    from recmtl.export.scorer import BundleScorer

    scores = BundleScorer(bundle).score_raw(rows, where="daily test rows")
    return {k: v.numpy() for k, v in scores.items()}


def task_aucs(scores: dict[str, np.ndarray], rows: pa.Table, cfg: Config, tasks: list[str],
              where: np.ndarray | None = None) -> dict[str, float]:
    """AUC per task of ``scores`` on ``rows`` (those in ``where`` only, when given), each task
    in its sample space; a task whose rows hold one class is left out."""
    out = {}
    for name in tasks:
        task = cfg.task(name)
        labels = rows.column(task.label).to_numpy(zero_copy_only=False).astype(np.float64)
        keep = (rows.column(task.space).to_numpy(zero_copy_only=False) > 0 if task.space
                else np.ones(len(labels), dtype=bool))
        if where is not None:
            keep &= where
        value = auc(labels[keep], scores[name][keep])
        if value is not None:
            out[name] = value
    return out


def new_id_figures(bundle: str | Path, rows: pa.Table, cfg: Config, tasks: list[str],
                   scores: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The next day's rows whose id in some vocabulary feature the new model's data never held
    (``recmtl/export/new_ids.py``): their count and share, per feature too, and the AUC of
    each model in ``scores`` (name -> its scores of ``rows``) on them."""
    from recmtl.export.new_ids import new_id_masks
    from recmtl.metrics.new_ids import any_new

    masks = new_id_masks(bundle, rows, where="daily test rows")
    if not masks:
        return {}
    new = any_new(masks)
    return {"rows": int(new.sum()), "share": float(new.mean()),
            "features": {k: int(m.sum()) for k, m in masks.items()},
            "auc": {who: task_aucs(s, rows, cfg, tasks, new) for who, s in scores.items()}}


def promote(client: Any, model_name: str, summary: dict[str, Any], day: Day, cfg: Config,
            daily_cfg: Any) -> dict[str, Any]:
    """Moves ``alias`` to the new version unless it loses more than the tolerance on a gated
    task against the current alias on day d + 1's raw rows; tags the version either way."""
    version = summary["model_version"]
    tasks = list(daily_cfg.promote_tasks) or [t.name for t in cfg.tasks if t.kind == "binary"]
    rows = read_rows(day.next_raw)
    scores = {"candidate": raw_scores(summary["export"], rows)}
    candidate = task_aucs(scores["candidate"], rows, cfg, tasks)
    champion_version, champion = None, None
    try:
        current = client.get_model_version_by_alias(model_name, daily_cfg.alias)
    except MlflowException as e:  # no alias yet (the first day): nothing to beat
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    else:
        champion_version = current.version
        checkpoint = client.get_run(current.run_id).data.tags["recmtl.checkpoint"]
        scores["champion"] = raw_scores(run_dir_of(checkpoint) / "export", rows)
        champion = task_aucs(scores["champion"], rows, cfg, tasks)
    worse = {t: (candidate[t], champion[t]) for t in tasks if champion and t in candidate
             and t in champion and candidate[t] < champion[t] - daily_cfg.promote_tolerance}
    if champion is None:
        promoted, reason = True, f"version {version} promoted to {daily_cfg.alias!r} (the first)"
    elif worse:
        promoted = False
        reason = (f"version {version} not promoted: " + "; ".join(
            f"{t} AUC {c:.4f} < {daily_cfg.alias} (version {champion_version}) {w:.4f} - "
            f"{daily_cfg.promote_tolerance}" for t, (c, w) in worse.items()))
    else:
        promoted = True
        reason = (f"version {version} promoted to {daily_cfg.alias!r}: " + ", ".join(
            f"{t} {candidate[t]:.4f} vs {champion[t]:.4f}" for t in tasks if t in candidate
            and t in champion))
    tags = {"recmtl.parent_run": summary.get("parent_run") or "",
            "recmtl.data_window": f"{day.raw.name}..{day.next_raw.name}",
            "recmtl.data_version": summary.get("data_version") or "",
            "recmtl.config_hash": client.get_run(summary["run_id"]).data.tags.get(
                "recmtl.config_hash", ""),
            "recmtl.promotion": reason}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    if promoted:
        client.set_registered_model_alias(model_name, daily_cfg.alias, version)
    return {"promoted": promoted, "reason": reason, "auc": candidate,
            "champion_auc": champion, "champion_version": champion_version,
            "new_ids": new_id_figures(summary["export"], rows, cfg, tasks, scores)}


def _day_start(day: RawDay, column: str) -> np.datetime64:
    first = pc.min(read_rows(day, columns=[column]).column(column)).as_py()
    return np.datetime64(first.replace(tzinfo=None), "D")


def _path(value: str, config_dir: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() or path.exists() else (config_dir / path)


def _spec_name(spec_path: Path) -> str:
    return str(read_yaml_mapping(spec_path)["name"])
