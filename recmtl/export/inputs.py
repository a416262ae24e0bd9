"""Raw feature rows (Arrow) -> scorer inputs, with the bundle's id transforms; no torchrec.

Ids per feature come out as CSR ``(values [N], offsets [B + 1])``; dense columns as ``[B, D]``.
Every problem is an error naming the column and the expectation: nothing is clipped or filled
(a null list is an empty history or bag, as training reads it; a null id is an error).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recmtl.errors import RecmtlError


class BundleError(RecmtlError, ValueError):
    """A bundle is incomplete, corrupt, or was given input it cannot score."""


def rows_to_inputs(table: pa.Table, manifest: dict[str, Any], where: str = "input"
                   ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    n = table.num_rows
    ids: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for f in manifest["sparse_features"]:
        name = f["name"]
        if name not in table.column_names:
            raise BundleError(f"{where}: input lacks sparse feature {name!r} required by the bundle")
        col = table.column(name).combine_chunks()
        if f["multi_valued"]:
            if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
                raise BundleError(f"{where}: column {name!r} has type {col.type}; expected a list")
            col = col.fill_null(pa.scalar([], col.type))  # a null list is empty, as in training
            flat = col.flatten()
            if flat.null_count:
                raise BundleError(f"{where}: column {name!r} has {flat.null_count} null id(s) "
                                  "inside its lists")
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
            values = flat.to_numpy()
        elif col.null_count:
            raise BundleError(f"{where}: column {name!r} has {col.null_count} null value(s)")
        else:
            lengths = np.ones(n, dtype=np.int64)
            values = col.to_numpy()
        values = _transform(values, f, where)
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        ids[name] = (torch.from_numpy(values), torch.from_numpy(offsets))
    dense = np.empty((n, len(manifest["dense_features"])), dtype=np.float32)
    for j, name in enumerate(manifest["dense_features"]):
        if name not in table.column_names:
            raise BundleError(f"{where}: input lacks dense feature {name!r} required by the bundle")
        x = table.column(name).to_numpy().astype(np.float32)
        if not np.isfinite(x).all():
            raise BundleError(f"{where}: column {name!r} has NaN, infinite or null values")
        dense[:, j] = x
    return ids, torch.from_numpy(dense)


# The id range each transform accepts: rows of the table, or a managed table's raw ids (any
# int64 but its maximum).
_ID_RANGE = {"identity": lambda spec: spec["num_embeddings"],
             "managed_collision": lambda spec: 2**63 - 1}


def _transform(values: np.ndarray, feature: dict[str, Any], where: str) -> np.ndarray:
    spec = feature["id_transform"]
    if spec["kind"] not in _ID_RANGE:
        raise BundleError(f"{where}: unknown id transform {spec['kind']!r} for {feature['name']!r}")
    if not np.issubdtype(values.dtype, np.integer):
        raise BundleError(f"{where}: column {feature['name']!r} has {values.dtype} ids; "
                          "expected integers")
    if values.dtype == np.uint64 and values.size and values.max() >= 2**63:
        raise BundleError(f"{where}: column {feature['name']!r} has ids of 2**63 or more")
    values = values.astype(np.int64)
    end = _ID_RANGE[spec["kind"]](spec)
    bad = (values < 0) | (values >= end)
    if bad.any():
        raise BundleError(f"{where}: column {feature['name']!r} has {int(bad.sum())} id(s) outside "
                          f"[0, {end}) (first: {int(values[bad][0])})")
    return values


def lookup_rows(ids: torch.Tensor, sorted_ids: torch.Tensor, rows: torch.Tensor,
                default_row: int) -> torch.Tensor:
    """Rows of a managed table's raw ``ids`` given its mapping (``sorted_ids`` and the rows
    they own); ids without a row read ``default_row``.

        >>> lookup_rows(torch.tensor([7, 3, 9]), torch.tensor([3, 7]), torch.tensor([1, 0]), 2)
        tensor([0, 1, 2])
    """
    if sorted_ids.numel() == 0:
        return torch.full_like(ids, default_row)
    at = torch.searchsorted(sorted_ids, ids).clamp(max=sorted_ids.numel() - 1)
    return torch.where(sorted_ids[at] == ids, rows[at], torch.full_like(ids, default_row))
