"""Training-time metrics with ``torchrec.metrics``: a ``RecMetricModule`` computes, per binary
task and across all ranks, windowed and lifetime AUC, normalised entropy and calibration, plus
throughput. Each task is scored in its own sample space: rows outside it get weight 0.

``update`` runs every step on every rank; ``compute`` is a collective, called at the same
steps on every rank (the loop's logging steps).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torchrec.metrics.metric_module import RecMetricModule, generate_metric_module
from torchrec.metrics.metrics_config import (
    MetricsConfig,
    RecMetricDef,
    RecMetricEnum,
    RecTaskInfo,
    ThroughputDef,
)

from recmtl.config import TaskConfig
from recmtl.losses import sample_space, task_probabilities

METRICS = (RecMetricEnum.AUC, RecMetricEnum.NE, RecMetricEnum.CALIBRATION)


def build_rec_metrics(tasks: tuple[TaskConfig, ...], batch_size: int, device: torch.device,
                      window_size: int = 100_000) -> RecMetricModule:
    """``window_size``: rows (over all ranks) the windowed metrics look back over."""
    infos = [RecTaskInfo(name=t.name, label_name=f"{t.name}-label",
                         prediction_name=f"{t.name}-prediction", weight_name=f"{t.name}-weight")
             for t in tasks if t.kind == "binary"]
    config = MetricsConfig(
        rec_tasks=infos,
        rec_metrics={m: RecMetricDef(rec_tasks=infos, window_size=window_size) for m in METRICS},
        throughput_metric=ThroughputDef(),
        compute_on_all_ranks=True,
    )
    world, rank = dist.get_world_size(), dist.get_rank()
    return generate_metric_module(RecMetricModule, config, batch_size=batch_size,
                                  world_size=world, my_rank=rank, state_metrics_mapping={},
                                  device=device)


def metric_inputs(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                  tasks: tuple[TaskConfig, ...]) -> dict[str, torch.Tensor]:
    """The flat ``{task-prediction, task-label, task-weight}`` dict ``update`` reads."""
    probs = task_probabilities({k: v.detach() for k, v in outputs.items()}, tasks)
    out: dict[str, torch.Tensor] = {}
    for t in tasks:
        if t.kind != "binary":
            continue
        mask = sample_space(t, labels)
        y = labels[t.label]
        out[f"{t.name}-prediction"] = probs[t.name].float()
        out[f"{t.name}-label"] = y
        out[f"{t.name}-weight"] = torch.ones_like(y) if mask is None else mask.to(y.dtype)
    return out


def computed(module: RecMetricModule) -> dict[str, float]:
    """``compute()`` (collective) as plain floats named for MLflow:
    ``train/<metric>-<task>/<window|lifetime>_<metric>``, e.g. ``train/auc-ctr/window_auc``."""
    values: Any = module.compute()
    return {f"train/{k.replace('|', '/')}": float(v) for k, v in dict(values).items()
            if isinstance(v, torch.Tensor) and v.numel() == 1}
