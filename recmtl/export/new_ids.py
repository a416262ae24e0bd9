"""Which raw rows carry ids new to a bundle's data: the new-id slice on raw next-day rows.

The bundle's raw transforms (``raw/transforms.json`` and ``raw/vocab/``: what ``recmtl
prepare`` fit) map each raw value of a vocabulary feature to its id, or to the OOV id 0 when
the preparation did not keep it (new since, below ``min_count``, or null): the row the scorer
then reads for it, trained by ``train.oov_dropout``. A row is new in a feature when that id is
0, exactly as ``recmtl.metrics.new_ids.masks_from_ids`` reads prepared ids.

    mask = new_id_mask("runs/x/export", pq.read_table("day-0007.parquet"))  # bool [n]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from recmtl.export.inputs import BundleError
from recmtl.export.raw import RawTransforms
from recmtl.metrics.new_ids import any_new, masks_from_ids, new_id_features


def _transforms(bundle_dir: str | Path | RawTransforms) -> RawTransforms:
    if isinstance(bundle_dir, RawTransforms):
        return bundle_dir
    path = Path(bundle_dir) / "raw" / "transforms.json"
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: the bundle has no raw transforms (its training data "
                          "did not come from recmtl prepare), so it has no vocabulary to know "
                          "new ids by")
    return RawTransforms(path)


def new_id_masks(bundle_dir: str | Path | RawTransforms, raw_rows: pa.Table,
                 where: str = "input") -> dict[str, np.ndarray]:
    """``{feature: bool [n]}`` per single-valued vocabulary feature of the bundle: the raw rows
    whose value maps to the OOV id (``bundle_dir``: a bundle directory, or its transforms
    already loaded). Empty when the bundle has no vocabulary feature."""
    raw = _transforms(bundle_dir)
    return masks_from_ids(raw.single_ids(raw_rows, new_id_features(raw.spec), where))


def new_id_mask(bundle_dir: str | Path | RawTransforms, raw_rows: pa.Table,
                where: str = "input") -> np.ndarray:
    """bool [n]: the raw rows new in at least one vocabulary feature of the bundle (all False
    when it has none)."""
    masks = new_id_masks(bundle_dir, raw_rows, where)
    return any_new(masks) if masks else np.zeros(raw_rows.num_rows, dtype=bool)
