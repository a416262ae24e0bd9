"""`recmtl export`: a checkpoint -> serving bundle, parity-checked against the trained model on
every backend it contains (torch.export, ONNX, AOTInductor)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recmtl.config import Config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.bundle import export_bundle
from recmtl.export.parity import check_parity
from recmtl.export.scorer import BundleScorer
from recmtl.train.checkpoint import load_unsharded


def export(cfg: Config, checkpoint: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Writes the bundle to ``out_dir`` and ``parity.json`` beside it; raises on a parity miss."""
    model = load_unsharded(cfg, checkpoint)
    reader = ParquetBatchReader(f"{cfg.data.root.rstrip('/')}/test", FeatureSchema.from_config(cfg),
                                cfg.export.parity_rows)
    batch = next(iter(reader.epoch(0)))
    manifest = export_bundle(model, cfg, out_dir, model.pooled(batch.sparse).detach(), batch.dense)
    backends = ["torch"] + ["onnx"] * cfg.export.onnx + ["aoti"] * cfg.export.aot_inductor
    diffs = {b: check_parity(model, BundleScorer(out_dir, b), batch, cfg.tasks,
                             cfg.export.parity_atol) for b in backends}
    parity = {"rows": batch.size, "atol": cfg.export.parity_atol, "max_abs_diff": diffs}
    (Path(out_dir) / "parity.json").write_text(json.dumps(parity, indent=2))
    print(f"exported {out_dir} ({', '.join(manifest['outputs'])}): parity on {batch.size} rows, "
          + "; ".join(f"{b} max abs diff {max(d.values()):.1e}" for b, d in diffs.items()))
    return {"manifest": manifest, "parity": parity}
