"""Config sections of the architectures that build task-specific inputs (issue #18):
``model.dtrn`` and ``model.infnet``. Kept apart from ``schema.py``; see docs/models.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InnerArchitecture = Literal["shared_bottom", "mmoe", "ple", "home", "adatt", "sparse_moe"]
SEGate = Literal["sigmoid", "relu"]


HyperInit = Literal["shared", "random"]


@dataclass(frozen=True)
class DTRNConfig:
    """``model.arch: dtrn`` (Liu et al. 2023): task-specific bottoms, then ``backbone``.

    ``backbone``: the architecture each task's bottom runs through (its own keys of
    ``model``: ``num_experts``, ``expert_layers``, ...). ``task_dim``: width of the learned
    task embedding the hypernetwork reads; ``rank``: rank of each generated attention weight's
    task part (``W + U diag(g(e_t)) V``). ``se_reduction``: the SENet's fields over its hidden
    width; ``se_gate``: ``sigmoid`` (``2 * sigmoid``, starts near 1) or FiBiNET's ``relu``.
    ``hyper_init``: ``shared`` starts every task at the shared attention unit (the
    generator's output zero, LoRA-style; the tasks move apart as they learn), ``random`` starts
    the tasks' parts about as large as the shared weight.
    """

    backbone: InnerArchitecture = "mmoe"
    task_dim: int = 8
    rank: int = 4
    hyper_init: HyperInit = "shared"
    se_reduction: float = 2.0
    se_gate: SEGate = "sigmoid"


TaskReads = Literal["proxies", "tokens"]


@dataclass(frozen=True)
class INFNetConfig:
    """``model.arch: infnet``: categorical, sequence and task tokens, ``dim`` wide, through
    ``num_layers`` blocks of proxy cross-attention (``num_heads`` heads, ``num_proxies``
    proxies per feature type) and Proxy Gated Units (``pgu_hidden`` wide). ``task_reads``:
    the task tokens read all the feature ``tokens`` (T x N per block, still linear in N) or
    only the feature types' ``proxies``.
    """

    dim: int = 32
    num_layers: int = 2
    num_heads: int = 4
    num_proxies: int = 4
    pgu_hidden: int = 64
    task_reads: TaskReads = "tokens"
