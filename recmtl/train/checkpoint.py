"""Sharded checkpoints with ``torch.distributed.checkpoint`` and their unsharded restore.

Each rank writes only its own shards; restoring into a plain (unsharded) model in one process
reads them all. State that every rank holds alike (RMTL's critics) is written once, by rank 0,
beside the shards (``replicated.pt``). Only tensors and plain data are stored: nothing is
unpickled on load (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from recmtl.config import Config
from recmtl.models.builder import build_model
from recmtl.modules.ranker import MultiTaskRanker

PROGRESS = "progress.json"
REPLICATED = "replicated.pt"


class Replicated(Protocol):
    """State equal on every rank: plain data and tensors (None: nothing to save yet)."""

    def state_dict(self) -> dict[str, Any] | None: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def save_sharded(path: str | Path, model: nn.Module, optimizer: object) -> None:
    """Collective: every rank must call it with the same ``path`` semantics (its own dir is fine)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}  # type: ignore[attr-defined]
    dcp.save(state, checkpoint_id=str(path))


def load_sharded(path: str | Path, model: nn.Module, optimizer: Any) -> None:
    """Collective: restores this rank's shards (model, fused and dense optimizer) in place."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


def save_replicated(path: str | Path, states: dict[str, Replicated]) -> None:
    """Rank 0 writes ``{name: state_dict()}`` of ``states`` into checkpoint ``path`` (every
    rank may call it; an object with nothing to save yet is left out)."""
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    saved = {name: sd for name, obj in states.items() if (sd := obj.state_dict()) is not None}
    if saved:
        torch.save(saved, Path(path) / REPLICATED)


def load_replicated(path: str | Path, states: dict[str, Replicated]) -> list[str]:
    """Loads what checkpoint ``path`` holds of ``states`` into them; returns the names loaded
    (a checkpoint written without one leaves it as it is)."""
    file = Path(path) / REPLICATED
    if not states or not file.exists():
        return []
    saved = torch.load(file, weights_only=True, map_location="cpu")
    for name in saved.keys() & states.keys():
        states[name].load_state_dict(saved[name])
    return sorted(saved.keys() & states.keys())


def save_progress(path: str | Path, progress: dict[str, int]) -> None:
    (Path(path) / PROGRESS).write_text(json.dumps(progress))


def load_progress(path: str | Path) -> dict[str, int]:
    """Where training stands: ``epoch``, ``batch`` (next batch of that epoch), ``global_step``."""
    return {k: int(v) for k, v in json.loads((Path(path) / PROGRESS).read_text()).items()}


def load_unsharded(cfg: Config, path: str | Path) -> MultiTaskRanker:
    """Builds the model on CPU and fills it from a sharded checkpoint, in this process alone."""
    path = Path(path)
    if not (path / ".metadata").exists():
        raise FileNotFoundError(f"{path}: not a recmtl checkpoint (no .metadata file)")
    model = build_model(cfg)
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(path), no_dist=True)
    model.load_state_dict(state["model"])
    return model.eval()
