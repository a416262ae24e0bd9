"""Keeps third-party chatter out of a job's output so the progress bar, the results and real
warnings stay readable (``--verbose`` keeps all of it).

Known noise, by source: torchrec's planner and fbgemm's library loading (``logging``), torch
FutureWarnings from DMP, DCP and the ONNX exporter, MLflow's INFO lines, its integer-schema
hint and its artifact progress bars, Ray's INFO and WARNING lines from the train controller and
workers (``ray`` loggers, Ray Train's ``LoggingConfig``).
``quiet_third_party`` quiets this process; ``quiet_ray_runtime_env`` does the same in every
process Ray starts for a job.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

_ERRORS_ONLY = ("torchrec", "fbgemm_gpu", "torch.fx", "torch.distributed", "torch.export",
                "torch.onnx", "onnxscript", "ray", "filelock")
_WARNINGS_AND_UP = ("mlflow", "alembic", "urllib3")
_WARNINGS = [  # (category, module regex, message regex)
    (UserWarning, r"(torchrec|torch|fbgemm_gpu|onnxscript)\..*", ""),
    (FutureWarning, r"(torchrec|torch|fbgemm_gpu|onnxscript)\..*", ""),
    (FutureWarning, "", r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # via copyreg
    (UserWarning, r"mlflow\..*", r"Hint: Inferred schema contains integer column"),
    (UserWarning, "", r"The axis name: .* will not be used"),
    (UserWarning, r"torchmetrics\..*", ""),
    # torchrec's sharded state dicts are ShardedTensors; reading their sizes (warm start) warns
    (FutureWarning, "", r"Please use DTensor instead and we are deprecating ShardedTensor"),
    (DeprecationWarning, "", ""),
]


_QUIET_ENV = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
              "RAY_LOGGER_LEVEL": "error",
              # torch resets its loggers' levels when it loads; these it sets to ERROR then
              "TORCH_LOGS": "-onnx,-export,-distributed"}


def quiet_third_party() -> None:
    """Known third-party logs below their level of interest and known warnings, in this process."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in _ERRORS_ONLY:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in _WARNINGS_AND_UP:
        logging.getLogger(name).setLevel(logging.WARNING)
    for category, module, message in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for key, value in _QUIET_ENV.items():  # read at import: effective before mlflow / ray load
        os.environ.setdefault(key, value)


def quiet_ray_runtime_env() -> dict[str, Any]:
    """A Ray ``runtime_env`` whose worker processes (train controller, workers) start quiet;
    Ray Train's own ``ray.train`` lines are set by its ``LoggingConfig`` (``launch.py``)."""
    return {"worker_process_setup_hook": "recmtl.logs.quiet_third_party",
            "env_vars": dict(_QUIET_ENV)}
