"""Runs a model over batches and collects per-task probabilities beside labels and extras."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from recmtl.config import TaskConfig
from recmtl.data.batch import Batch
from recmtl.losses import task_probabilities


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch], tasks: tuple[TaskConfig, ...],
            device: torch.device | None = None, logits: bool = False) -> dict[str, np.ndarray]:
    """Returns ``{"pred/<task>": p, "<label or extra column>": values}`` as float64 arrays;
    with ``logits``, also ``"logit/<task>"`` for each task with a head of its own (the float32
    logits exactly, which post-hoc calibration reads)."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        if device is not None:
            batch = batch.to(device)
        outputs = model(batch.dense, batch.sparse)
        probs = task_probabilities(outputs, tasks)
        cols = {f"pred/{k}": v for k, v in probs.items()} | batch.labels | batch.extras
        if logits:
            cols |= {f"logit/{t.name}": outputs[t.name] for t in tasks if not t.product_of}
        if batch.group is not None:
            cols["group"] = batch.group
        for k, v in cols.items():
            parts.setdefault(k, []).append(v.detach().to("cpu", torch.float64))
    return {k: torch.cat(v).numpy() for k, v in parts.items()}
