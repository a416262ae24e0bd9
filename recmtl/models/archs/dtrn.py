"""DTRN (Liu et al. 2023): task-specific bottoms. Each history gives one interest per task
(a hypernetwork-generated attention unit), a task SENet re-weights every field, each task takes
the pair products of its own fields, and an inner expert backbone reads each task's bottom."""

from __future__ import annotations

from typing import get_args

from recmtl.config import ModelConfig, SequenceConfig
from recmtl.config.bottoms import InnerArchitecture
from recmtl.models.architecture import Architecture, BackboneInputs, BuildBackbone
from recmtl.models.archs import adatt, home, mmoe, ple, shared_bottom, sparse_moe
from recmtl.modules.dtrn import DTRN, TaskInterest, TaskSENet, task_width

# ``model.dtrn.backbone``: the expert families a task's bottom can run through.
BOTTOMS: dict[str, BuildBackbone] = {
    "shared_bottom": shared_bottom.build,
    "mmoe": mmoe.build,
    "ple": ple.build,
    "home": home.build,
    "adatt": adatt.build,
    "sparse_moe": sparse_moe.build,
}
if list(BOTTOMS) != list(get_args(InnerArchitecture)):  # the loader checks model.dtrn.backbone
    raise ImportError(f"dtrn.BOTTOMS {list(BOTTOMS)} != config {get_args(InnerArchitecture)}")


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> DTRN:
    """Fields: one per block (a history's block holds one part per task), then one per dense
    column; each task's bottom gets its own pair products when ``model.interaction`` is dot."""
    blocks, task_blocks = list(inputs.blocks), sorted(inputs.sequences)
    t = len(tasks)
    senet = TaskSENet(num_fields=len(blocks) + inputs.num_scalars, num_tasks=t,
                      reduction=model.dtrn.se_reduction, gate=model.dtrn.se_gate)
    pairs = model.interaction == "dot" and len(blocks) > 1
    width = task_width(blocks, task_blocks, inputs.num_scalars, t, pairs)
    return DTRN(block_widths=blocks, task_blocks=task_blocks, num_scalars=inputs.num_scalars,
                num_tasks=t, senet=senet, pairs=pairs,
                backbone=BOTTOMS[model.dtrn.backbone](model, BackboneInputs.flat(width), tasks))


def interest(model: ModelConfig, seq: SequenceConfig, dim: int, num_tasks: int) -> TaskInterest:
    """A history as one interest per task: ``[B, T * D]``."""
    return TaskInterest(embedding_dim=dim, hidden_dims=seq.attention_layers, num_tasks=num_tasks,
                        task_dim=model.dtrn.task_dim, rank=model.dtrn.rank,
                        normalize=seq.normalize, shared_init=model.dtrn.hyper_init == "shared")


ARCH = Architecture(build, about="task-specific bottoms (task SENet, per-task interests and "
                    "pair products) under an inner expert backbone",
                    sequence_encoder=interest,
                    sequence_width=lambda dim, max_len, num_tasks: dim * num_tasks,
                    own_interaction=True)
