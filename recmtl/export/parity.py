"""Parity: the bundle must score like the trained model on the same rows."""

from __future__ import annotations

import torch
from torch import nn

from recmtl.config import TaskConfig
from recmtl.data.batch import Batch
from recmtl.export.scorer import BundleScorer
from recmtl.losses import task_probabilities


class ParityError(AssertionError):
    """Exported and trained scores differ by more than the tolerance."""


def kjt_to_csr(batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {k: (jt.values(), jt.offsets()) for k, jt in batch.sparse.to_dict().items()}


@torch.no_grad()
def check_parity(model: nn.Module, scorer: BundleScorer, batch: Batch, tasks: tuple[TaskConfig, ...],
                 atol: float) -> dict[str, float]:
    """Max abs difference per task; raises ``ParityError`` when any exceeds ``atol``."""
    model.eval()
    expected = task_probabilities(model(batch.dense, batch.sparse), tasks)
    actual = scorer.score(kjt_to_csr(batch), batch.dense)
    if sorted(actual) != sorted(scorer.outputs):
        raise ParityError(f"bundle {scorer.dir} returned {sorted(actual)}; "
                          f"its manifest promises {sorted(scorer.outputs)}")
    diffs = {t: float((actual[t] - expected[t]).abs().max()) for t in actual}
    bad = {t: d for t, d in diffs.items() if not d <= atol}
    if bad:
        raise ParityError(f"exported bundle {scorer.dir} ({scorer.backend}) differs from the "
                          f"trained model by "
                          f"{bad} (max abs, tolerance {atol})")
    return diffs
