"""`recmtl evaluate`: a checkpoint + test Parquet -> report.json, report.html, a printed table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recmtl.config import Config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.metrics.html import render_html
from recmtl.metrics.report import build_report, format_table
from recmtl.predict import predict
from recmtl.train.checkpoint import load_unsharded


def evaluate(cfg: Config, checkpoint: str | Path, out_dir: str | Path,
             split: str = "test") -> dict[str, Any]:
    model = load_unsharded(cfg, checkpoint)
    schema = FeatureSchema.from_config(cfg, with_extras=True)
    reader = ParquetBatchReader(f"{cfg.data.root.rstrip('/')}/{split}", schema,
                                cfg.data.eval_batch_size)
    report = build_report(cfg.tasks, predict(model, reader.epoch(0), cfg.tasks))
    report |= {"split": split, "checkpoint": str(checkpoint), "data": reader.uri}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.html").write_text(render_html(report, f"recmtl: {cfg.name} ({split})"))
    print(format_table(report))
    return report
