"""Per-epoch validation across ranks: AUC per task in its sample space, and expert health."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from recmtl.config import TaskConfig
from recmtl.data.reader import ParquetBatchReader
from recmtl.metrics.auc import auc
from recmtl.modules.diagnostics import ExpertProbe
from recmtl.predict import predict


def validation_auc(tasks: tuple[TaskConfig, ...], model: torch.nn.Module,
                   reader: ParquetBatchReader, device: torch.device) -> dict[str, float | None]:
    """AUC per binary task in its sample space over all ranks' validation shards (collective)."""
    local = predict(model, reader.epoch(0), tasks, device)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    cols = {k: np.concatenate([g[k] for g in gathered]) for k in local}
    out: dict[str, float | None] = {}
    for t in tasks:
        if t.kind != "binary":
            continue
        keep = cols[t.space] > 0.5 if t.space else slice(None)
        out[t.name] = auc(cols[t.label][keep], cols[f"pred/{t.name}"][keep])
    return out


def reduced_summary(probe: ExpertProbe, device: torch.device) -> dict[str, Any]:
    """The probe's sums over every rank's validation shard (collective)."""
    keys = probe.keys()
    if keys:
        flat = torch.cat([probe.sums[k].reshape(-1) for k in keys]).to(device)
        dist.all_reduce(flat)
        offset = 0
        for k in keys:
            n = probe.sums[k].numel()
            probe.sums[k] = flat[offset:offset + n].view_as(probe.sums[k]).cpu()
            offset += n
    return probe.summary()
