"""Warm start: yesterday's checkpoint into today's sharded model, whatever its world size,
sharding plan or table sizes.

Every tensor whose shape did not change and whose rows were not remapped is loaded by
``torch.distributed.checkpoint`` as it is: DCP reshards by itself (2 ranks -> 1 or 3,
table-wise -> row-wise). An embedding table (pooled or a sequence table) that grew, or whose
rows moved (a vocabulary remap from `recmtl prepare --previous`), is read whole once by every
rank that holds a shard of it, and each copies the rows its own shards hold: its weights and
its fused optimizer state (Adagrad accumulators) alike. Rows with no source (new values,
recycled rows) keep today's fresh initialisation and a zero optimizer state. Dense weights,
their optimizer state and the managed tables' id -> row maps carry over unchanged; a dense
shape that changed is an error (the features or the model differ).

Every rank takes part in every load, whether or not it holds a shard of the table: the list
of tensors copied by row is agreed on by all ranks first (a rank knows only the optimizer
state of the shards it holds). The loads run on a process group of their own with a short
time limit (``recmtl.train.collectives``): a load some rank never reaches fails on the others
within ``timeout_s`` (60 s; more on a checkpoint of gigabytes) with an error naming it.

A remap is ``{table: (old_ids, new_ids)}``: row ``old_ids[i]`` of yesterday's table becomes
row ``new_ids[i]`` of today's. A table without one keeps rows ``[0, min(old, new))`` in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint import FileSystemReader

from recmtl.errors import ConfigError
from recmtl.train.collectives import DEFAULT_TIMEOUT_S, BoundedSteps

# The pooled tables' collection and the sequence tables' one (an EmbeddingCollection).
TABLE_PREFIXES = ("embeddings.embedding_bags.", "sequence_embeddings.embeddings.")
Remap = tuple[np.ndarray, np.ndarray]
READ_BYTES_PER_S = 100e6  # the slowest checkpoint storage allowed for (see read_allowance_s)
Blocks = tuple[tuple[int, int], ...]


@dataclass
class TableCarry:
    """What a warm start did to one table (per table, the same on every rank)."""

    old_rows: int
    new_rows: int
    carried: int  # rows that took yesterday's values
    resharded_only: bool  # loaded by DCP as it was (same shape, no remap)
    ids: Remap | None = field(default=None, repr=False)  # (old, new) rows when copied by row
    # Column shards (start, width), yesterday's and today's: a row-wise optimizer state holds
    # one value per row and column shard.
    blocks: tuple[Blocks, Blocks] = field(default=((), ()), repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"old_rows": self.old_rows, "new_rows": self.new_rows, "carried": self.carried,
                "fresh": self.new_rows - self.carried, "resharded_only": self.resharded_only}


@dataclass
class _Plan:
    """One rank's part of a warm start, decided before any load."""

    as_is: dict[str, Any]  # the nested state DCP loads in place, resharding it
    rows: dict[str, Any]  # flat key -> live tensor, of this rank's tensors copied by row
    carries: dict[str, TableCarry]  # by table, of the tables in the checkpoint
    by_param: dict[str, TableCarry]  # the same by weight key (``embeddings...item.weight``)


def warm_start(model: torch.nn.Module, optimizer: Any, source: str | Path,
               remaps: dict[str, Remap] | None = None,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Loads checkpoint ``source`` into the sharded ``model`` and ``optimizer`` (collective:
    every rank issues the same loads); returns per-table counts and the tables only one side
    has. Each load is bounded by ``timeout_s`` plus the time a big checkpoint's reads may take
    (``read_allowance_s``: 0 s below ~50 MB a rank)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    saved = FileSystemReader(str(source)).read_metadata().state_dict_metadata
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    limit = timeout_s + read_allowance_s(saved, world)
    with BoundedSteps(f"warm start from {source}", limit) as steps:
        try:
            plan, problem = _plan(state, saved, remaps or {}, source), None
        except ConfigError as e:  # raised on every rank alike below, never on some alone
            plan, problem = None, str(e)
        agreed = steps.all_gather("agreeing on the tensors to load",
                                  (sorted(plan.rows) if plan else [], problem))
        if problems := [p for _, p in agreed if p is not None]:
            raise ConfigError(problems[0])
        assert plan is not None
        steps.run("loading the tensors that keep their shape",
                  lambda group: _load(plan.as_is, source, group))
        by_row = sorted(set().union(*(keys for keys, _ in agreed)))
        for i, flat in enumerate(by_row, 1):
            _copy_by_row(steps, f"loading {_describe(flat)} (row copy {i} of {len(by_row)})",
                         flat, plan, saved, source)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    tables = set(_tables(state["model"]).values())
    saved_tables = set(_tables({k.removeprefix("model."): v for k, v in saved.items()}).values())
    return {"tables": {t: c.as_dict() for t, c in plan.carries.items()},
            "new_tables": sorted(tables - saved_tables),
            "dropped_tables": sorted(saved_tables - tables)}


def read_allowance_s(saved: dict[str, Any], world: int) -> float:
    """Seconds a load may take beyond the limit on a big checkpoint: a rank's share of it and
    the largest tensor (one read whole for a row copy) at ``READ_BYTES_PER_S``, in whole
    seconds (ranks wait in a load's last collective while the slowest one reads)."""
    sizes = [math.prod(m.size) * m.properties.dtype.itemsize for m in saved.values()
             if hasattr(m, "size")]
    return float(round((sum(sizes) / world + max(sizes, default=0)) / READ_BYTES_PER_S))


def _plan(state: dict[str, Any], saved: dict[str, Any], remaps: dict[str, Remap],
          source: str | Path) -> _Plan:
    rows: dict[str, Any] = {}
    fresh: set[str] = set()  # flat keys of tables the checkpoint lacks
    carries: dict[str, TableCarry] = {}
    by_param: dict[str, TableCarry] = {}
    for param, table in _tables(state["model"]).items():
        weight, key = state["model"][param], f"model.{param}"
        if key not in saved:  # keeps its fresh state
            fresh |= {flat for flat, _ in row_tensors(state, table)}
            continue
        old_shape = saved[key].size
        remap = remaps.get(table)
        blocks = (_saved_blocks(saved[key]), _live_blocks(weight))
        same_blocks = blocks[0] == blocks[1] or not _has_row_wise_state(saved, param)
        if old_shape == weight.size() and _is_identity(remap, old_shape[0]) and same_blocks:
            carries[table] = TableCarry(old_shape[0], old_shape[0], old_shape[0], True)
            continue
        if old_shape[1:] != weight.size()[1:]:
            raise ConfigError(f"warm start from {source}: table {table!r} has dim "
                              f"{old_shape[1]} there and {weight.size(1)} now")
        old_ids, new_ids = remap if remap is not None else _in_place(old_shape[0], weight.size(0))
        _check_remap(table, old_ids, new_ids, old_shape[0], weight.size(0), source)
        carries[table] = by_param[param] = TableCarry(
            old_shape[0], weight.size(0), len(new_ids), False, (old_ids, new_ids), blocks)
        for flat, live in row_tensors(state, table):
            if flat not in saved:
                raise ConfigError(f"warm start from {source}: {flat} is not in the checkpoint "
                                  f"(was table {table!r} trained with another optimizer?)")
            rows[flat] = live
    as_is = _without(state, fresh | set(rows))
    _check_dense_shapes(as_is, saved, source)
    return _Plan(as_is, rows, carries, by_param)


def _copy_by_row(steps: BoundedSteps, step: str, flat: str, plan: _Plan, saved: dict[str, Any],
                 source: str | Path) -> None:
    """Row copy of tensor ``flat``: the ranks holding rows of it read it whole and copy their
    rows; the others load nothing but take part in the load's collectives all the same."""
    live = plan.rows.get(flat)
    full = None
    if live is not None and _holds_rows(live):
        full = torch.empty(saved[flat].size, dtype=saved[flat].properties.dtype)
    steps.run(step, lambda group: _load(_nest(flat, full) if full is not None else {}, source,
                                        group))
    if full is None:
        return
    carry = plan.by_param[_param(flat)]
    assert carry.ids is not None
    if full.dim() == 1 and not flat.startswith("model."):  # a row-wise optimizer state
        blocks = _rebin(full, carry.old_rows, *carry.blocks, source)
        copy_rows(blocks, live, *carry.ids, rows=carry.new_rows)
    else:
        copy_rows(full, live, *carry.ids)


def _load(state: dict[str, Any], source: str | Path, group: dist.ProcessGroup | None) -> None:
    """One DCP load of ``state`` in place (collective on ``group``)."""
    dcp.load(state, checkpoint_id=str(source), process_group=group)


def _tables(model_state: dict[str, Any]) -> dict[str, str]:
    """``{weight key: table name}`` of every embedding table, pooled and sequence alike."""
    return {k: k.removeprefix(prefix).removesuffix(".weight") for k in model_state
            for prefix in TABLE_PREFIXES if k.startswith(prefix) and k.endswith(".weight")}


def table_param(model_state: dict[str, Any], table: str) -> str:
    """The weight key of ``table`` in a model state (in either collection)."""
    for prefix in TABLE_PREFIXES:
        if f"{prefix}{table}.weight" in model_state:
            return f"{prefix}{table}.weight"
    raise KeyError(f"no embedding table {table!r} in the model")


def row_tensors(state: dict[str, Any], table: str) -> list[tuple[str, Any]]:
    """``(flat DCP key, live tensor)`` of the table's weight and of every fused optimizer
    state of it this rank holds (their first dimension is the table's rows)."""
    param = table_param(state["model"], table)
    per_param = state["optimizer"]["state"].get(param, {})
    return [(f"model.{param}", state["model"][param])] + [
        (f"optimizer.state.{param}.{name}", t) for name, t in per_param.items()
        if isinstance(t, ShardedTensor)]


def _param(flat: str) -> str:
    """``model.<param>`` or ``optimizer.state.<param>.<state>`` -> ``<param>``."""
    if flat.startswith("model."):
        return flat.removeprefix("model.")
    return flat.removeprefix("optimizer.state.").split(".weight.", 1)[0] + ".weight"


def _describe(flat: str) -> str:
    table = _tables({_param(flat): None})[_param(flat)]
    if flat.startswith("model."):
        return f"table {table!r}"
    name = flat.split(".weight.", 1)[1].removeprefix(f"{table}.")
    return f"optimizer state {name!r} of table {table!r}"


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
    param = _param(flat)
    name = flat.removeprefix(f"optimizer.state.{param}.")
    return {"optimizer": {"state": {param: {name: tensor}}}}


def _local(tensor: Any) -> torch.Tensor:
    shards = tensor.local_shards() if isinstance(tensor, ShardedTensor) else []
    return shards[0].tensor if shards else torch.empty(0)


def _shards(target: Any) -> list[tuple[torch.Tensor, list[int]]]:
    """``(local tensor, its offsets in the whole)`` of each shard this rank holds of
    ``target``; a plain tensor (a data-parallel table) is one shard at the origin."""
    if isinstance(target, ShardedTensor):
        return [(s.tensor, list(s.metadata.shard_offsets)) for s in target.local_shards()]
    return [(target, [0] * target.dim())]


def _holds_rows(target: Any) -> bool:
    return any(t.numel() for t, _ in _shards(target))


def copy_rows(full: torch.Tensor | list[torch.Tensor], target: Any, old_ids: np.ndarray,
              new_ids: np.ndarray, rows: int | None = None) -> None:
    """Into each local shard of ``target``: row ``new`` <- ``full[old]`` for the pairs whose
    ``new`` row the shard holds (the shard's columns only, for column-wise tables).

    A row-wise optimizer state of a table in ``k`` column shards is one value per row and
    column shard (``k * rows`` long, shard ``j``'s values at ``[j * rows, (j + 1) * rows)``):
    with ``rows`` given, ``full`` is one tensor for all column shards or a list of ``k``."""
    order = np.argsort(new_ids, kind="stable")
    new_sorted, old_sorted = new_ids[order], old_ids[order]
    for tensor, offsets in _shards(target):
        block, start = divmod(offsets[0], rows) if rows else (0, offsets[0])
        source = full[block] if isinstance(full, list) else full
        lo, hi = np.searchsorted(new_sorted, [start, start + tensor.size(0)])
        if hi == lo:
            continue
        dest = torch.from_numpy(new_sorted[lo:hi] - start)
        values = source[torch.from_numpy(old_sorted[lo:hi])]
        if source.dim() > 1:
            values = values[:, offsets[1]:offsets[1] + tensor.size(1)]
        with torch.no_grad():
            tensor.index_copy_(0, dest, values.to(tensor.dtype))


def _saved_blocks(meta: Any) -> Blocks:
    """The column shards ``(start, width)`` of a saved table, in column order."""
    return tuple(sorted({(int(c.offsets[1]), int(c.sizes[1])) for c in meta.chunks}))


def _live_blocks(weight: Any) -> Blocks:
    """The column shards of a live table over all ranks (a plain tensor: one)."""
    if not isinstance(weight, ShardedTensor):
        return ((0, int(weight.size(1))),)
    return tuple(sorted({(int(m.shard_offsets[1]), int(m.shard_sizes[1]))
                         for m in weight.metadata().shards_metadata}))


def _has_row_wise_state(saved: dict[str, Any], param: str) -> bool:
    prefix = f"optimizer.state.{param}."
    return any(k.startswith(prefix) and len(getattr(v, "size", ())) == 1 for k, v in saved.items())


def _rebin(full: torch.Tensor, rows: int, old: Blocks, new: Blocks,
           source: str | Path) -> list[torch.Tensor]:
    """A row-wise optimizer state saved over column shards ``old`` -> one ``rows``-long tensor
    per column shard of ``new``: the width-weighted mean of the old shards' values it overlaps
    (each is a mean over its columns: exact where a new shard is a union of old ones, the
    parent's value where an old shard is cut finer)."""
    if full.numel() != len(old) * rows:
        raise ConfigError(f"warm start from {source}: a row-wise optimizer state of "
                          f"{full.numel()} values for {rows} rows in {len(old)} column shards")
    per_old = full.view(len(old), rows)
    out = []
    for start, width in new:
        values = torch.zeros(rows, dtype=full.dtype)
        for (old_start, old_width), old_values in zip(old, per_old, strict=True):
            overlap = min(start + width, old_start + old_width) - max(start, old_start)
            if overlap > 0:
                values += old_values * (overlap / width)
        out.append(values)
    return out


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
