"""Parity: the bundle must score like the trained model on the same rows."""

from __future__ import annotations

import torch
from torch import nn

from recmtl.config import TaskConfig
from recmtl.data.batch import Batch
from recmtl.export.scorer import BundleScorer
from recmtl.losses import task_probabilities
from recmtl.metrics.calibrate import calibrated_probabilities
from recmtl.modules.calibration import TaskCalibrators


class ParityError(AssertionError):
    """Exported and trained scores differ by more than the tolerance."""


def kjt_to_csr(batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {k: (jt.values(), jt.offsets()) for k, jt in batch.sparse.to_dict().items()}


# The logit play a calibrated output is checked with, as a multiple of ``atol``: sigmoid's
# steepest slope is 1/4, so 4 atol is what the plain check already allows a logit at p = 0.5.
LOGIT_SLACK = 4.0


@torch.no_grad()
def check_parity(model: nn.Module, scorer: BundleScorer, batch: Batch, tasks: tuple[TaskConfig, ...],
                 atol: float, calibrators: TaskCalibrators | None = None) -> dict[str, float]:
    """Max abs difference per task; raises ``ParityError`` when any exceeds ``atol``.

    ``calibrators``: the bundle's post-hoc calibrators; the reference is then the calibrated
    model. Runtimes' logits differ by float32 ulps (ONNX's matmuls add in another order), and
    an isotonic curve's near-vertical segments turn that into visible probability gaps. So a
    calibrated output passes when it lies within ``atol`` of the calibrated model at some logit
    within ``LOGIT_SLACK * atol`` of the model's: between ``cal(z - e)`` and ``cal(z + e)``,
    which bracket every such value since calibrators are monotone. The returned differences
    are the plain ones, against ``cal(z)``.
    """
    model.eval()
    logits = model(batch.dense, batch.sparse)
    actual = scorer.score(kjt_to_csr(batch), batch.dense)
    if sorted(actual) != sorted(scorer.outputs):
        raise ParityError(f"bundle {scorer.dir} returned {sorted(actual)}; "
                          f"its manifest promises {sorted(scorer.outputs)}")
    if calibrators is None:
        expected = task_probabilities(logits, tasks)
        misses = diffs = {t: float((actual[t] - expected[t]).abs().max()) for t in actual}
    else:
        calibrators = calibrators.eval()
        expected = calibrated_probabilities(logits, tasks, calibrators)
        diffs = {t: float((actual[t] - expected[t]).abs().max()) for t in actual}
        slack = LOGIT_SLACK * atol
        low, high = ({name: logits[name] + sign * slack if name in calibrators.base
                      else logits[name] for name in logits} for sign in (-1.0, 1.0))
        below = calibrated_probabilities(low, tasks, calibrators)
        above = calibrated_probabilities(high, tasks, calibrators)
        misses = {t: float(torch.maximum(torch.minimum(below[t], above[t]) - actual[t],
                                         actual[t] - torch.maximum(below[t], above[t]))
                           .clamp(min=0).max()) for t in actual}
    bad = {t: diffs[t] for t, d in misses.items() if not d <= atol}
    if bad:
        bracket = (f"; calibrated outputs also miss their range over logits +-{slack:g} by "
                   f"{ {t: misses[t] for t in bad} }" if calibrators is not None else "")
        raise ParityError(f"exported bundle {scorer.dir} ({scorer.backend}) differs from the "
                          f"trained model by {bad} (max abs, tolerance {atol}){bracket}")
    return diffs
