"""`recmtl export`: a checkpoint -> serving bundle, parity-checked against the trained model on
every backend it contains (torch.export, ONNX, AOTInductor). With ``evaluate.calibration`` the
bundle carries the post-hoc calibrators and the reference is the calibrated model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.jobs.calibrate import fit_calibration
from recmtl.config import Config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.bundle import export_bundle
from recmtl.export.parity import LOGIT_SLACK, check_parity
from recmtl.export.scorer import BundleScorer
from recmtl.metrics.calibrate import FittedCalibration
from recmtl.modules.ranker import MultiTaskRanker
from recmtl.train.checkpoint import load_unsharded


def export(cfg: Config, checkpoint: str | Path, out_dir: str | Path,
           calibration: FittedCalibration | None = None,
           model: MultiTaskRanker | None = None) -> dict[str, Any]:
    """Writes the bundle to ``out_dir`` and ``parity.json`` beside it; raises on a parity miss.
    ``calibration``: the checkpoint's calibrators, already fit (else fit here on the valid
    split when ``evaluate.calibration`` asks for them); ``model``: the checkpoint, loaded."""
    if model is None:
        model = load_unsharded(cfg, checkpoint)
    if calibration is None:
        calibration = fit_calibration(cfg, model)
    reader = ParquetBatchReader(f"{cfg.data.root.rstrip('/')}/test", FeatureSchema.from_config(cfg),
                                cfg.export.parity_rows)
    batch = next(iter(reader.epoch(0)))
    manifest = export_bundle(model, cfg, out_dir, model.pooled(batch.sparse).detach(), batch.dense,
                             calibration)
    backends = ["torch"] + ["onnx"] * cfg.export.onnx + ["aoti"] * cfg.export.aot_inductor
    calibrators = calibration.calibrators if calibration else None
    diffs = {b: check_parity(model, BundleScorer(out_dir, b), batch, cfg.tasks,
                             cfg.export.parity_atol, calibrators) for b in backends}
    parity = {"rows": batch.size, "atol": cfg.export.parity_atol, "max_abs_diff": diffs}
    if calibration is not None:  # calibrated outputs pass within atol of cal(logit +- slack)
        parity |= {"calibration": calibration.method,
                   "logit_slack": LOGIT_SLACK * cfg.export.parity_atol}
    (Path(out_dir) / "parity.json").write_text(json.dumps(parity, indent=2))
    print(f"exported {out_dir} ({', '.join(manifest['outputs'])}): parity on {batch.size} rows, "
          + "; ".join(f"{b} max abs diff {max(d.values()):.1e}" for b, d in diffs.items()))
    return {"manifest": manifest, "parity": parity}
