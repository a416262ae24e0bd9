"""The bundle as an MLflow model: a pyfunc that scores raw feature rows with ``BundleScorer``.

Input: a DataFrame with one column per feature in the manifest (lists for multi-valued ones);
output: one ``score_<task>`` column per served task. Logged as "models from code"
(``mlflow_model_code.py``): loading it imports recmtl, nothing is unpickled.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pyarrow as pa
from mlflow.models import infer_signature

from recmtl.export.scorer import BundleScorer


class BundleModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    def load_context(self, context: Any) -> None:
        self.scorer = BundleScorer(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return score_frame(self.scorer, model_input)


SERVING_PACKAGES = ("recmtl", "mlflow", "torch", "safetensors", "numpy", "pandas", "pyarrow")


def serving_requirements() -> list[str]:
    """What the logged model needs, pinned to this environment's versions (a local build tag
    such as ``+cpu`` dropped). Written out rather than inferred: MLflow's inference loads the
    model in a subprocess (13 of the 15 s of a log here) and still missed torch."""
    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def score_frame(scorer: BundleScorer, frame: pd.DataFrame) -> pd.DataFrame:
    scores = scorer.score_rows(pa.Table.from_pandas(frame, preserve_index=False))
    return pd.DataFrame({f"score_{k}": v.numpy() for k, v in scores.items()})


def log_bundle_model(bundle_dir: str | Path, example: pa.Table,
                     registered_model_name: str | None = None) -> tuple[str, str | None]:
    """Logs the bundle into the active run as model ``model``; returns its model URI and,
    when registered under ``registered_model_name``, the version it got."""
    scorer = BundleScorer(bundle_dir)
    columns = [f["name"] for f in scorer.features] + list(scorer.dense_features)
    frame = example.select(columns).to_pandas()
    signature = infer_signature(frame, score_frame(scorer, frame))
    info = mlflow.pyfunc.log_model(
        name="model", python_model=str(Path(__file__).with_name("mlflow_model_code.py")),
        artifacts={"bundle": str(bundle_dir)},
        signature=signature, input_example=frame.head(5),
        registered_model_name=registered_model_name, pip_requirements=serving_requirements(),
    )
    version = getattr(info, "registered_model_version", None)
    return str(info.model_uri), None if version is None else str(version)
