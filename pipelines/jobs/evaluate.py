"""`recmtl evaluate`: a checkpoint (or a serving bundle) + test Parquet -> report.json,
report.html, a printed table, and optionally predictions.parquet.

Rows are read in data order (part files sorted by path, row groups in file order), the order
``ParquetBatchReader`` yields them with one rank and no shuffle, so predictions from a
checkpoint, from a bundle and the slice columns all line up row for row.

With ``evaluate.calibration`` (a checkpoint; ``pipelines/jobs/calibrate.py``), the report's
tasks score the calibrated probabilities, as the bundle serves them, and ``"calibration"``
holds each task's metrics before and after; a bundle's scores are calibrated already.

Data from ``recmtl prepare`` also gets the new-id slices (``recmtl.metrics.new_ids``): rows
whose id of a vocabulary feature is the OOV id, in any feature and per feature.

Slice columns (``evaluate.slices``) are read straight from the Parquet files beside the
predictions rather than through ``Batch.extras``: extras are float32 by contract, while a
slice column is categorical (integer, string or boolean ids, nulls allowed and reported).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recmtl.config import Config, derive
from recmtl.data.reader import ParquetBatchReader, RowGroup, discover
from recmtl.data.schema import FeatureSchema
from recmtl.data.validate import check_nulls
from recmtl.errors import DataError
from recmtl.metrics.calibrate import (
    FittedCalibration,
    calibrated_columns,
    calibration_section,
    format_calibration,
)
from recmtl.metrics.html import render_html
from recmtl.metrics.new_ids import masks_from_ids, new_id_features, new_id_slices
from recmtl.metrics.report import build_report, format_table
from recmtl.metrics.slices import SliceColumn
from recmtl.modules.ranker import MultiTaskRanker
from recmtl.storage import read_text


def with_slices(cfg: Config, columns: Sequence[str]) -> Config:
    """``cfg`` with ``columns`` added to ``evaluate.slices`` (``--slice`` on the command line)."""
    slices = tuple(dict.fromkeys((*cfg.evaluate.slices, *columns)))
    return derive(cfg, {"evaluate.slices": slices})


def evaluate(cfg: Config, checkpoint: str | Path | None, out_dir: str | Path,
             split: str = "test", bundle: str | Path | None = None,
             calibration: FittedCalibration | None = None,
             model: MultiTaskRanker | None = None) -> dict[str, Any]:
    """Scores ``split`` with ``checkpoint`` or, instead, with the serving ``bundle`` (plain
    torch, no torchrec in the scoring path); writes the report into ``out_dir``.
    ``calibration``: the checkpoint's calibrators, already fit (else fit here when
    ``evaluate.calibration`` asks for them); ``model``: the checkpoint, already loaded."""
    if checkpoint is not None and bundle is not None:
        raise ValueError("evaluate takes a checkpoint or a bundle, not both")
    uri = f"{cfg.data.root.rstrip('/')}/{split}"
    schema = FeatureSchema.from_config(cfg, with_extras=True)
    fs, row_groups = discover(uri, schema)
    slices = read_slices(fs, row_groups, cfg.evaluate.slices)  # a bad column fails before scoring
    slices |= read_new_id_slices(cfg, fs, row_groups)
    diagnostics, uncalibrated = None, None
    if bundle is not None:
        cols = bundle_predictions(bundle, fs, row_groups, schema)
        source = {"bundle": str(bundle)}
    elif checkpoint is not None:
        cols, diagnostics, calibration = checkpoint_predictions(cfg, checkpoint, uri, schema,
                                                                calibration, model)
        if calibration is not None:
            uncalibrated = cols
            cols = calibrated_columns(cols, cfg.tasks, calibration.calibrators)
        source = {"checkpoint": str(checkpoint)}
    else:
        raise ValueError("evaluate needs a checkpoint or a bundle")
    rows = len(next(iter(cols.values())))
    for name, col in slices.items():
        if len(col.codes) != rows:  # the reader and the Parquet files disagree: never guess
            raise DataError(f"{uri}: slice column {name!r} has {len(col.codes)} rows, "
                            f"the predictions {rows}")
    missing = [t.name for t in cfg.tasks if f"pred/{t.name}" not in cols]
    if missing:
        print(f"not scored (the bundle does not serve them): {', '.join(missing)}")
    report = build_report(cfg.tasks, cols, bootstrap=cfg.evaluate.bootstrap, slices=slices,
                          max_slices=cfg.evaluate.max_slices)
    report |= {"split": split, **source, "data": uri}
    if calibration is not None and uncalibrated is not None:
        before = build_report(cfg.tasks, uncalibrated, bootstrap=0)
        report["calibration"] = calibration_section(before, report, calibration)
    if diagnostics and diagnostics["gates"]:
        report["diagnostics"] = diagnostics | {"tasks": cfg.base_tasks()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.html").write_text(render_html(report, f"recmtl: {cfg.name} ({split})"))
    if cfg.evaluate.save_predictions:
        write_predictions(out / "predictions.parquet", cfg, cols)
    print(format_table(report))
    if "calibration" in report:
        print(format_calibration(report["calibration"]))
    return report


def checkpoint_predictions(cfg: Config, checkpoint: str | Path, uri: str,
                           schema: FeatureSchema, calibration: FittedCalibration | None = None,
                           model: MultiTaskRanker | None = None
                           ) -> tuple[dict[str, np.ndarray], dict[str, Any],
                                      FittedCalibration | None]:
    """Predictions beside labels (with ``logit/<task>`` columns when calibrating), the
    expert-health summary of the same pass, and the calibration (fit on the valid split
    here when the config asks for one and none was given)."""
    from pipelines.jobs.calibrate import fit_calibration
    from recmtl.modules.diagnostics import ExpertProbe
    from recmtl.predict import predict
    from recmtl.train.checkpoint import load_unsharded

    if model is None:
        model = load_unsharded(cfg, checkpoint)
    if calibration is None:
        calibration = fit_calibration(cfg, model)
    reader = ParquetBatchReader(uri, schema, cfg.data.eval_batch_size)
    probe = ExpertProbe(model.dense_ranker.backbone)
    with probe:
        cols = predict(model, reader.epoch(0), cfg.tasks, logits=calibration is not None)
    return cols, probe.summary(), calibration


def _row_groups(fs: pafs.FileSystem, row_groups: list[RowGroup], columns: list[str]
                ) -> Iterator[tuple[str, pa.Table]]:
    """``(where, table)`` per row group in data order; a column missing from a file is an
    error naming the file (pyarrow would silently leave it out)."""
    files: dict[str, pq.ParquetFile] = {}
    for rg in row_groups:
        if rg.path not in files:
            files[rg.path] = pq.ParquetFile(fs.open_input_file(rg.path))
            names = set(files[rg.path].schema_arrow.names)
            for col in columns:
                if col not in names:
                    raise DataError(f"{rg.path}: column {col!r} is missing; expected it for "
                                    "evaluation (evaluate.slices or the bundle's features)")
        yield f"{rg.path}, row group {rg.index}", files[rg.path].read_row_group(rg.index,
                                                                               columns=columns)


def bundle_predictions(bundle: str | Path, fs: pafs.FileSystem, row_groups: list[RowGroup],
                       schema: FeatureSchema) -> dict[str, np.ndarray]:
    """What ``recmtl.predict.predict`` returns, with the bundle's scorer doing the scoring."""
    from recmtl.export.scorer import BundleScorer

    scorer = BundleScorer(bundle)
    inputs = [f["name"] for f in scorer.features] + list(scorer.dense_features)
    columns = list(dict.fromkeys(inputs + schema.columns))
    parts: dict[str, list[np.ndarray]] = {}
    for where, table in _row_groups(fs, row_groups, columns):
        check_nulls(table, schema, where, 0)
        cols = {f"pred/{k}": v.numpy() for k, v in scorer.score_rows(table, where).items()}
        for c in (*schema.labels, *schema.targets, *schema.extras):
            cols[c] = table.column(c).to_numpy()
        if schema.group:
            cols["group"] = table.column(schema.group).to_numpy()
        for k, v in cols.items():
            parts.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def read_slices(fs: pafs.FileSystem, row_groups: list[RowGroup], columns: Sequence[str]
                ) -> dict[str, SliceColumn]:
    """Each slice column over all rows in data order, factorised (nulls become a value)."""
    if not columns:
        return {}
    chunks: dict[str, list[pa.Array]] = {c: [] for c in columns}
    for _, table in _row_groups(fs, row_groups, list(columns)):
        for c in columns:
            chunks[c].extend(table.column(c).chunks)
    out = {}
    for c in columns:
        try:
            arr = pa.chunked_array(chunks[c]).combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"slice column {c!r} has different types across files: {e}") from e
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if not (pa.types.is_integer(arr.type) or pa.types.is_string(arr.type)
                or pa.types.is_large_string(arr.type) or pa.types.is_boolean(arr.type)):
            raise DataError(f"slice column {c!r} has type {arr.type}; expected categorical "
                            "values (integers, strings or booleans)")
        encoded = arr.dictionary_encode()
        values = tuple(encoded.dictionary.to_pylist())
        codes = pc.fill_null(encoded.indices, len(values)).to_numpy().astype(np.int64)
        out[c] = SliceColumn(codes, values + ((None,) if arr.null_count else ()))
    return out


def read_new_id_slices(cfg: Config, fs: pafs.FileSystem, row_groups: list[RowGroup]
                       ) -> dict[str, SliceColumn]:
    """The new-id slices (``recmtl.metrics.new_ids``) of data from ``recmtl prepare``: rows whose
    id of a single-valued vocabulary feature is the OOV id; none for other data."""
    text = read_text(cfg.data.root, "transforms.json")
    if text is None:
        return {}
    used = {f.name for f in cfg.features.sparse}
    features = [f for f in new_id_features(json.loads(text)) if f in used]
    if not features:
        return {}
    parts: dict[str, list[np.ndarray]] = {f: [] for f in features}
    for _, table in _row_groups(fs, row_groups, features):
        for f in features:
            parts[f].append(table.column(f).to_numpy())
    return new_id_slices(masks_from_ids({f: np.concatenate(v) for f, v in parts.items()}))


def write_predictions(path: Path, cfg: Config, cols: dict[str, np.ndarray]) -> None:
    """Labels (int8) and ``pred/<task>`` scores, one row per data row, in data order."""
    labels = dict.fromkeys(c for t in cfg.tasks for c in (t.label, t.space) if c and c in cols)
    table: dict[str, np.ndarray] = {c: cols[c].astype(np.int8) for c in labels}
    for t in cfg.tasks:
        p = cols.get(f"pred/{t.name}")
        if p is not None:
            # Model outputs are float32: keep them that way when it loses nothing.
            p32 = p.astype(np.float32)
            table[f"pred/{t.name}"] = p32 if np.array_equal(p32, p) else p
    pq.write_table(pa.table(table), path)

