"""`recmtl.config_hash`: one value per config, wherever it runs and over whichever days."""

from recmtl.config import load_config
from recmtl.train.tracking import config_hash

CONFIG = "configs/daily/daily.yaml"


def test_where_and_when_do_not_change_the_hash():
    base = config_hash(load_config(CONFIG))
    moved = load_config(CONFIG, ["data.root=/elsewhere", "output_dir=/out", "daily.days=9",
                                 "daily.work_dir=/w", "mlflow.tracking_uri=sqlite:///x.db"])
    assert config_hash(moved) == base


def test_what_is_trained_changes_the_hash():
    base = config_hash(load_config(CONFIG))
    for change in ("train.num_workers=3", "model.arch=ple", "data.batch_size=1024",
                   "mlflow.experiment=other"):
        assert config_hash(load_config(CONFIG, [change])) != base, change
