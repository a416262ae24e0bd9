"""Where a model came from: the checkpoint a warm start reads, the data version it trained on,
and the id remap that carries yesterday's rows into today's tables.

A run records its checkpoint and data version as MLflow tags (``recmtl.checkpoint``,
``recmtl.data_version``) and in ``<run dir>/summary.json``; a warm start names a checkpoint
directory, a run directory or an MLflow run id, and finds the rest from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recmtl.errors import ConfigError
from recmtl.storage import read_text


@dataclass(frozen=True)
class WarmSource:
    """A checkpoint to warm-start from and what is known of the run that wrote it."""

    checkpoint: Path
    run_id: str | None = None
    data_version: str | None = None


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory a checkpoint belongs to (``<run dir>/ray/train/epoch-NNNN``)."""
    return Path(checkpoint).parent.parent.parent


def data_version(root: str) -> str | None:
    """The version of a store made by `recmtl prepare` (its ``transforms.json``, local or on
    object storage), else None."""
    text = read_text(root, "transforms.json")
    return None if text is None else json.loads(text).get("version")


def resolve_warm_start(ref: str, tracking_uri: str | None) -> WarmSource:
    """A checkpoint directory, a run directory (its ``checkpoint`` file) or an MLflow run id."""
    path = Path(ref)
    if (path / ".metadata").exists():
        return WarmSource(path.resolve(), *_summary(run_dir_of(path)))
    if (path / "checkpoint").exists():
        return WarmSource(Path((path / "checkpoint").read_text().strip()), *_summary(path))
    if path.exists():
        raise ConfigError(f"--warm-start {ref}: neither a checkpoint (no .metadata) nor a run "
                          "directory (no checkpoint file)")
    return _from_mlflow(ref, tracking_uri)


def remap_dir(root: str, source: WarmSource) -> Path | None:
    """``<data root>/remap`` when today's data was prepared from the source's data version;
    an error when it was prepared from another one (the rows would land in wrong places)."""
    path = Path(root) / "remap"
    if "://" in root or not (path / "remap.json").exists():
        return None
    made_from = json.loads((path / "remap.json").read_text()).get("from_version")
    if source.data_version is not None and made_from != source.data_version:
        raise ConfigError(f"{path}/remap.json: the data was prepared from version {made_from}, "
                          f"but the warm-start model trained on version {source.data_version}; "
                          "prepare today's data with --previous pointing at that model's data")
    return path


def _summary(run_dir: Path) -> tuple[str | None, str | None]:
    path = run_dir / "summary.json"
    if not path.exists():
        return None, None
    summary = json.loads(path.read_text())
    return summary.get("run_id"), summary.get("data_version")


def _from_mlflow(run_id: str, tracking_uri: str | None) -> WarmSource:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        tags = MlflowClient(tracking_uri).get_run(run_id).data.tags
    except MlflowException as e:
        raise ConfigError(f"--warm-start {run_id}: no such checkpoint, run directory or MLflow "
                          f"run in {tracking_uri}") from e
    checkpoint = tags.get("recmtl.checkpoint")
    if not checkpoint or not (Path(checkpoint) / ".metadata").exists():
        raise ConfigError(f"--warm-start {run_id}: the run has no reachable checkpoint "
                          f"(tag recmtl.checkpoint: {checkpoint!r})")
    return WarmSource(Path(checkpoint), run_id, tags.get("recmtl.data_version") or None)
