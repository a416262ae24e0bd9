"""Warm start: yesterday's checkpoint into today's sharded model, whatever its world size,
sharding plan or table sizes.

Every tensor whose shape did not change and whose rows were not remapped is loaded by
``torch.distributed.checkpoint`` as it is: DCP reshards by itself (2 ranks -> 1 or 3,
table-wise -> row-wise). An embedding table that grew, or whose rows moved (a vocabulary
remap from `recmtl prepare --previous`), is read whole once on every rank and each rank copies
the rows its own shards hold: its weights and its fused optimizer state (Adagrad
accumulators) alike. Rows with no source (new values, recycled rows) keep today's fresh
initialisation and a zero optimizer state. Dense weights and their optimizer state carry over
unchanged; a dense shape that changed is an error (the features or the model differ).

A remap is ``{table: (old_ids, new_ids)}``: row ``old_ids[i]`` of yesterday's table becomes
row ``new_ids[i]`` of today's. A table without one keeps rows ``[0, min(old, new))`` in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint import FileSystemReader

from recmtl.errors import ConfigError

TABLE_PREFIX = "embeddings.embedding_bags."
SEQUENCE_TABLE_PREFIX = "sequence_embeddings.embeddings."  # not warm-started yet
Remap = tuple[np.ndarray, np.ndarray]


@dataclass
class TableCarry:
    """What a warm start did to one table (per table, the same on every rank)."""

    old_rows: int
    new_rows: int
    carried: int  # rows that took yesterday's values
    resharded_only: bool  # loaded by DCP as it was (same shape, no remap)
    ids: Remap | None = field(default=None, repr=False)  # (old, new) rows when copied by row

    def as_dict(self) -> dict[str, Any]:
        return {"old_rows": self.old_rows, "new_rows": self.new_rows, "carried": self.carried,
                "fresh": self.new_rows - self.carried, "resharded_only": self.resharded_only}


def warm_start(model: torch.nn.Module, optimizer: Any, source: str | Path,
               remaps: dict[str, Remap] | None = None) -> dict[str, Any]:
    """Loads checkpoint ``source`` into the sharded ``model`` and ``optimizer`` (collective);
    returns per-table counts and the tables only one side has."""
    remaps = remaps or {}
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    if any(k.startswith(SEQUENCE_TABLE_PREFIX) for k in state["model"]):
        raise ConfigError("warm start of the tables of sequence features (an "
                          "EmbeddingCollection) is not built yet (docs/sequences.md)")
    saved = FileSystemReader(str(source)).read_metadata().state_dict_metadata
    tables = _tables(state["model"])
    by_row: dict[str, tuple[Any, TableCarry]] = {}  # flat key -> (live sharded tensor, table)
    fresh: set[str] = set()  # flat keys of tables the checkpoint lacks
    carries: dict[str, TableCarry] = {}
    for table, weight in tables.items():
        key = f"model.{TABLE_PREFIX}{table}.weight"
        if key not in saved:  # keeps its fresh state
            fresh |= {flat for flat, _ in row_tensors(state, table)}
            continue
        old_shape = saved[key].size  # type: ignore[union-attr]
        remap = remaps.get(table)
        if old_shape == weight.size() and _is_identity(remap, old_shape[0]):
            carries[table] = TableCarry(old_shape[0], old_shape[0], old_shape[0], True)
            continue
        if old_shape[1:] != weight.size()[1:]:
            raise ConfigError(f"warm start from {source}: table {table!r} has dim "
                              f"{old_shape[1]} there and {weight.size(1)} now")
        old_ids, new_ids = remap if remap is not None else _in_place(old_shape[0], weight.size(0))
        _check_remap(table, old_ids, new_ids, old_shape[0], weight.size(0), source)
        carry = carries[table] = TableCarry(old_shape[0], weight.size(0), len(new_ids), False,
                                            (old_ids, new_ids))
        for flat, live in row_tensors(state, table):
            if flat not in saved:
                raise ConfigError(f"warm start from {source}: {flat} is not in the checkpoint "
                                  f"(was table {table!r} trained with another optimizer?)")
            by_row[flat] = (live, carry)
    as_is = _without(state, fresh | set(by_row))
    _check_dense_shapes(as_is, saved, source)
    dcp.load(as_is, checkpoint_id=str(source))  # in place; DCP reshards what it loads
    for flat, (live, carry) in by_row.items():
        full = torch.empty(saved[flat].size, dtype=_local(live).dtype)  # type: ignore[union-attr]
        dcp.load(_nest(flat, full), checkpoint_id=str(source))
        assert carry.ids is not None
        copy_rows(full, live, *carry.ids)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    saved_tables = {k.removeprefix(f"model.{TABLE_PREFIX}").removesuffix(".weight") for k in saved
                    if k.startswith(f"model.{TABLE_PREFIX}") and k.endswith(".weight")}
    return {"tables": {t: c.as_dict() for t, c in carries.items()},
            "new_tables": sorted(set(tables) - saved_tables),
            "dropped_tables": sorted(saved_tables - set(tables))}


def _tables(model_state: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix(TABLE_PREFIX).removesuffix(".weight"): v for k, v in model_state.items()
            if k.startswith(TABLE_PREFIX) and k.endswith(".weight")}


def row_tensors(state: dict[str, Any], table: str) -> list[tuple[str, Any]]:
    """``(flat DCP key, live sharded tensor)`` of the table's weight and of every fused
    optimizer state of it (their first dimension is the table's rows)."""
    param = f"{TABLE_PREFIX}{table}.weight"
    per_param = state["optimizer"]["state"].get(param, {})
    return [(f"model.{param}", state["model"][param])] + [
        (f"optimizer.state.{param}.{name}", t) for name, t in per_param.items()
        if isinstance(t, ShardedTensor)]


def _without(node: Any, drop: set[str], prefix: str = "") -> Any:
    """The nested state minus the flat keys in ``drop`` (and dicts left empty), sharing its
    tensors: what DCP loads in place."""
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        flat = f"{prefix}.{k}" if prefix else str(k)
        if flat in drop:
            continue
        kept = _without(v, drop, flat)
        if not (isinstance(kept, dict) and not kept and v):
            out[k] = kept
    return out


def _nest(flat: str, tensor: torch.Tensor) -> dict[str, Any]:
    """``model.embeddings...weight`` -> ``{"model": {"embeddings...weight": tensor}}``: DCP
    flattens nested dicts by their first level, the rest is the key."""
    if flat.startswith("model."):
        return {"model": {flat.removeprefix("model."): tensor}}
    rest = flat.removeprefix("optimizer.state.")
    param, name = rest.split(".weight.", 1)
    return {"optimizer": {"state": {f"{param}.weight": {name: tensor}}}}


def _local(tensor: Any) -> torch.Tensor:
    shards = tensor.local_shards() if isinstance(tensor, ShardedTensor) else []
    return shards[0].tensor if shards else torch.empty(0)


def copy_rows(full: torch.Tensor, target: Any, old_ids: np.ndarray, new_ids: np.ndarray) -> None:
    """Into each local shard of ``target``: row ``new`` <- ``full[old]`` for the pairs whose
    ``new`` row the shard holds (the shard's columns only, for column-wise tables)."""
    order = np.argsort(new_ids, kind="stable")
    new_sorted, old_sorted = new_ids[order], old_ids[order]
    for shard in target.local_shards():
        offsets, sizes = shard.metadata.shard_offsets, shard.metadata.shard_sizes
        lo, hi = np.searchsorted(new_sorted, [offsets[0], offsets[0] + sizes[0]])
        if hi == lo:
            continue
        dest = torch.from_numpy(new_sorted[lo:hi] - offsets[0])
        rows = full[torch.from_numpy(old_sorted[lo:hi])]
        if full.dim() > 1:
            rows = rows[:, offsets[1]:offsets[1] + sizes[1]]
        with torch.no_grad():
            shard.tensor.index_copy_(0, dest, rows.to(shard.tensor.dtype))


def _is_identity(remap: Remap | None, rows: int) -> bool:
    if remap is None:
        return True
    old_ids, new_ids = remap
    return (len(old_ids) == rows and bool(np.array_equal(old_ids, new_ids))
            and bool(np.array_equal(np.sort(old_ids), np.arange(rows))))


def _in_place(old_rows: int, new_rows: int) -> Remap:
    keep = np.arange(min(old_rows, new_rows), dtype=np.int64)
    return keep, keep


def _check_remap(table: str, old_ids: np.ndarray, new_ids: np.ndarray, old_rows: int,
                 new_rows: int, source: str | Path) -> None:
    where = f"warm start from {source}: remap of table {table!r}"
    if len(old_ids) != len(new_ids):
        raise ConfigError(f"{where}: {len(old_ids)} old ids but {len(new_ids)} new ids")
    if len(old_ids) and (old_ids.min() < 0 or old_ids.max() >= old_rows):
        raise ConfigError(f"{where}: old ids outside [0, {old_rows})")
    if len(new_ids) and (new_ids.min() < 0 or new_ids.max() >= new_rows):
        raise ConfigError(f"{where}: new ids outside [0, {new_rows}) (today's table size)")
    if len(np.unique(new_ids)) != len(new_ids):
        raise ConfigError(f"{where}: a new id appears twice")


def _check_dense_shapes(state: dict[str, Any], saved: dict[str, Any], source: str | Path) -> None:
    """Everything left for DCP must exist in the checkpoint with the same shape."""
    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, torch.Tensor):
            have = saved.get(prefix)
            if have is None:
                raise ConfigError(f"warm start from {source}: {prefix} is not in the checkpoint "
                                  "(the model changed; a warm start needs the same dense part)")
            if tuple(have.size) != tuple(node.size()):
                raise ConfigError(f"warm start from {source}: {prefix} has shape "
                                  f"{tuple(have.size)} there and {tuple(node.size())} now "
                                  "(the features or the model changed)")
    walk("", state)


def read_remaps(directory: str | Path | None) -> dict[str, Remap]:
    """``{table: (old_ids, new_ids)}`` from ``remap/<table>.parquet`` files (``old_id``,
    ``new_id``), as `recmtl prepare --previous` writes them; none without a directory."""
    if directory is None:
        return {}
    import pyarrow.parquet as pq

    remaps = {}
    for path in sorted(Path(directory).glob("*.parquet")):
        table = pq.read_table(path, columns=["old_id", "new_id"])
        remaps[path.stem] = (table.column("old_id").to_numpy().astype(np.int64),
                             table.column("new_id").to_numpy().astype(np.int64))
    return remaps
