"""The file MLflow runs to build the bundle's pyfunc model ("models from code"): the model is
code plus the bundle's files, never a pickled Python object."""

import mlflow

from recmtl.export.mlflow_model import BundleModel

mlflow.models.set_model(BundleModel())
