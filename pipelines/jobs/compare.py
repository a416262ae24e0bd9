"""`recmtl compare RUN_A RUN_B`: per task, AUC of A and B, the delta B - A and its 95% interval.
Prints a table; with ``--out``, writes compare.json and compare.html (one page, no scripts).

A run is a ``report.json`` file, a directory holding one, or an MLflow run id whose
``report.json`` artifact is fetched from ``--tracking-uri`` (default ``$MLFLOW_TRACKING_URI``).
When both runs also have ``predictions.parquet`` (beside the report, or as an artifact), the
interval comes from a paired bootstrap over the shared rows; otherwise from the two reports'
AUC intervals combined as independent, and the output says so (``recmtl.metrics.compare``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recmtl.errors import RecmtlError
from recmtl.metrics.compare import compare_reports
from recmtl.metrics.compare_html import render_compare_html
from recmtl.metrics.formatting import format_interval, format_value

REPORT, PREDICTIONS = "report.json", "predictions.parquet"


@dataclass(frozen=True)
class Run:
    source: str
    report: dict[str, Any]
    predictions: dict[str, np.ndarray] | None


def _read_predictions(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    table = pq.read_table(path)
    return {c: table.column(c).to_numpy().astype(np.float64) for c in table.column_names}


def load_run(ref: str, tracking_uri: str | None = None) -> Run:
    """A local report (file or directory) if ``ref`` exists on disk, else an MLflow run id."""
    path = Path(ref)
    if path.exists():
        report_path = path / REPORT if path.is_dir() else path
        if not report_path.exists():
            raise FileNotFoundError(f"{path}: no {REPORT} in this directory")
        return Run(str(report_path), json.loads(report_path.read_text()),
                   _read_predictions(report_path.parent / PREDICTIONS))
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise FileNotFoundError(f"{ref}: no such file or directory, and no MLflow tracking URI "
                                "(--tracking-uri or $MLFLOW_TRACKING_URI) to look it up as a run id")
    import mlflow
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the table clean

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=ref, artifact_path=REPORT,
                                                       tracking_uri=uri, dst_path=tmp)
        except MlflowException as e:
            raise FileNotFoundError(f"run {ref} at {uri}: no {REPORT} artifact ({e})") from e
        report = json.loads(Path(local).read_text())
        try:
            local = mlflow.artifacts.download_artifacts(run_id=ref, artifact_path=PREDICTIONS,
                                                       tracking_uri=uri, dst_path=tmp)
            predictions = _read_predictions(Path(local))
        except (MlflowException, OSError):  # a run logged without predictions: reports only
            predictions = None
    return Run(f"mlflow run {ref} ({uri})", report, predictions)


def format_comparison(result: dict[str, Any]) -> str:
    lines = [f"A: {result['a']}", f"B: {result['b']}",
             f"{'task':<8} {'auc A':>7} {'auc B':>7}  {'B - A [95% interval]':<27} method"]
    for name, t in result["tasks"].items():
        delta = format_interval(t["delta"], t["delta_ci95"], signed=True)
        lines.append(f"{name:<8} {format_value(t['auc_a']):>7} {format_value(t['auc_b']):>7}  "
                     f"{delta:<27} {t['method'] or '-'}")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """``(compare.json, compare.html)`` for ``--out``: both inside a directory (a path with no
    suffix is one), or the page beside a named JSON file with the same stem."""
    path = Path(out)
    if path.is_dir() or not path.suffix:
        return path / "compare.json", path / "compare.html"
    if path.suffix == ".html":
        raise RecmtlError(f"--out {path}: name the JSON file (compare.json) or a directory; "
                         "the HTML page is written beside it")
    return path, path.with_suffix(".html")


def compare(run_a: str, run_b: str, out: str | Path | None = None,
            tracking_uri: str | None = None, resamples: int = 200, seed: int = 0
            ) -> dict[str, Any]:
    a, b = load_run(run_a, tracking_uri), load_run(run_b, tracking_uri)
    result = {"a": a.source, "b": b.source, "resamples": resamples,
              **compare_reports(a.report, b.report, a.predictions, b.predictions, resamples, seed)}
    print(format_comparison(result))
    if out is not None:
        json_path, html_path = output_paths(out)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
        html_path.write_text(render_compare_html(result, f"recmtl compare: {a.source} vs {b.source}"))
        print(f"wrote {json_path} and {html_path}")
    return result
