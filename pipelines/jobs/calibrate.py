"""Post-hoc calibration after training (``evaluate.calibration``): the trained model's logits on
the valid split -> one calibrator per task (``recmtl.metrics.calibrate``), which the report
compares on the test split and the bundle serves.

The fit reads the valid split only, so test metrics after calibration are out of sample. It is
deterministic given the model and the data: ``recmtl evaluate`` and ``recmtl export`` of a
checkpoint refit the same calibrators that ``recmtl train`` fit once for both.
"""

from __future__ import annotations

from torch import nn

from recmtl.config import Config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.metrics.calibrate import FittedCalibration, fit_task_calibrators
from recmtl.predict import predict


def fit_calibration(cfg: Config, model: nn.Module, split: str = "valid"
                    ) -> FittedCalibration | None:
    """The calibrators ``cfg.evaluate.calibration`` asks for, fit on ``split``; None for none.
    A task whose fit is impossible (one label value, constant logits) stays uncalibrated, and
    the fit, the report and the manifest say why."""
    method = cfg.evaluate.calibration
    if method == "none":
        return None
    uri = f"{cfg.data.root.rstrip('/')}/{split}"
    reader = ParquetBatchReader(uri, FeatureSchema.from_config(cfg), cfg.data.eval_batch_size)
    cols = predict(model, reader.epoch(0), cfg.tasks, logits=True)
    fitted = fit_task_calibrators(cfg.tasks, cols, method, cfg.evaluate.calibration_max_knots,
                                  split=split)
    for name, info in fitted.tasks.items():
        print(f"calibration {name}: {info.get('calibrator') or info['skipped']} "
              f"({info['rows']:,} {split} rows)")
    return fitted
