"""Sharded checkpoints with ``torch.distributed.checkpoint`` and their unsharded restore.

Each rank writes only its own shards; restoring into a plain (unsharded) model in one process
reads them all. Only tensors and plain data are stored: nothing is unpickled on load.
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed.checkpoint as dcp
from torch import nn

from recmtl.config import Config
from recmtl.models.builder import build_model
from recmtl.modules.ranker import MultiTaskRanker


def save_sharded(path: str | Path, model: nn.Module, optimizer: object) -> None:
    """Collective: every rank must call it with the same ``path`` semantics (its own dir is fine)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}  # type: ignore[attr-defined]
    dcp.save(state, checkpoint_id=str(path))


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
