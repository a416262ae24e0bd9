"""Checks a feature store before any compute starts: every split has Parquet files with rows
and every file's schema fits the config (the reader checks values as it goes)."""

from __future__ import annotations

from recmtl.config import Config
from recmtl.data.reader import discover
from recmtl.data.schema import FeatureSchema
from recmtl.errors import DataError

SPLITS = ("train", "valid", "test")


def check_feature_store(cfg: Config, splits: tuple[str, ...] = SPLITS) -> dict[str, int]:
    """Rows per split; a ``DataError`` naming the split, file and column otherwise.

    Reads Parquet footers only. A missing split says how a store is made.
    """
    schema = FeatureSchema.from_config(cfg)
    root = cfg.data.root.rstrip("/")
    rows = {}
    for split in splits:
        try:
            _, row_groups = discover(f"{root}/{split}", schema)
        except DataError as e:
            if "no such file" in str(e) or "no .parquet files" in str(e):
                raise DataError(f"{e} (data.root of {cfg.name!r} is {cfg.data.root}; "
                                "`recmtl generate CONFIG` writes the synthetic store there, "
                                "`recmtl prepare SPEC` a store from your export)") from e
            raise
        rows[split] = sum(g.num_rows for g in row_groups)
    return rows
