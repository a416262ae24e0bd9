import os

import pytest

from pipelines.synthetic.store import generate
from recmtl.config import derive, load_config


@pytest.fixture(scope="session")
def smoke_cfg(tmp_path_factory):
    """configs/smoke.yaml with its tiny feature store generated into a temporary directory."""
    root = tmp_path_factory.mktemp("smoke_data")
    cfg = load_config("configs/smoke.yaml", [f"data.root={root}"])
    generate(cfg)
    return cfg


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every integration test (starting it costs ~10 s here)."""
    import ray

    start_local_ray()
    yield ray
    ray.shutdown()


def start_local_ray():
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, 3), include_dashboard=False,
             configure_logging=False)


def with_output(cfg, tmp_path):
    """The config writing its runs and MLflow store under ``tmp_path``."""
    return derive(cfg, {"output_dir": str(tmp_path / "runs"),
                       "mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
