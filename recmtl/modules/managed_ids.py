"""Open id spaces: raw int64 ids mapped to embedding rows by torchrec's zero-collision (MCH)
modules, so a table needs no vocabulary pass and no hash that makes ids share rows.

A managed table of ``N`` rows keeps a sorted list of the raw ids that own rows ``0 .. N - 2``;
row ``N - 1`` is shared by every id without a row of its own. Training records the ids it sees
(``admit``); every ``eviction_interval`` steps the most frequent new ids take rows, evicting
the ids the policy ranks lowest when the table is full, and the rows they take are returned
so the trainer can re-initialise them. Lookups (``forward``) only map ids: in evaluation and
serving the mapping is fixed.

Notation: B = rows, F = sparse features; the KJT layout is the one of ``recmtl.data.batch``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchrec.modules.mc_modules import MCHManagedCollisionModule
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

Gather = Callable[[torch.Tensor], torch.Tensor]


def _jagged(values: torch.Tensor) -> dict[str, JaggedTensor]:
    return {"ids": JaggedTensor(values=values, lengths=values.new_tensor([values.numel()]))}


class ManagedIds(nn.Module):
    """``sparse KJT (raw ids in managed features) -> KJT (row ids)``.

    Args:
        tables: ``{table: MCH module}`` (its ``zch_size`` is the table's rows).
        features: ``{feature: table}`` for the features whose ids are raw.
    """

    def __init__(self, tables: dict[str, MCHManagedCollisionModule],
                 features: dict[str, str]) -> None:
        super().__init__()
        self.tables = nn.ModuleDict(tables)
        self.features = dict(features)

    def table(self, name: str) -> MCHManagedCollisionModule:
        module = self.tables[name]
        assert isinstance(module, MCHManagedCollisionModule)
        return module

    def forward(self, sparse: KeyedJaggedTensor) -> KeyedJaggedTensor:
        values = sparse.values()
        parts, bounds = [], sparse.offset_per_key()
        for i, key in enumerate(sparse.keys()):
            part = values[bounds[i]:bounds[i + 1]]
            table = self.features.get(key)
            if table is not None:
                part = self.table(table).remap(_jagged(part))["ids"].values()
            parts.append(part)
        return KeyedJaggedTensor(keys=sparse.keys(), values=torch.cat(parts),
                                 lengths=sparse.lengths(), weights=sparse.weights_or_none())

    @torch.no_grad()
    def admit(self, sparse: KeyedJaggedTensor, gather: Gather | None = None,
              ) -> dict[str, torch.Tensor]:
        """Records one training step's ids and, on admission steps, gives rows to new ids;
        returns ``{table: rows taken}`` (rows whose embedding must be re-initialised).

        ``gather`` concatenates a tensor over all ranks in rank order: every rank then records
        the same global ids and holds the same mapping, without a sharded MCH."""
        by_table: dict[str, list[torch.Tensor]] = {}
        values, bounds = sparse.values(), sparse.offset_per_key()
        for i, key in enumerate(sparse.keys()):
            if key in self.features:
                by_table.setdefault(self.features[key], []).append(values[bounds[i]:bounds[i + 1]])
        taken = {}
        for table, parts in by_table.items():
            ids = torch.cat(parts)
            module = self.table(table)
            ids = gather(ids) if gather else ids
            _make_room(module, ids.numel())
            module.profile(_jagged(ids))
            rows = module.evict()
            if rows is not None and rows.numel():
                taken[table] = rows
        return taken

    def mapping(self, table: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sorted raw ids, their rows)`` of ``table``'s ids that own a row: what serving
        needs to map ids without torchrec (``recmtl.export.inputs.lookup_rows``)."""
        module = self.table(table)
        raw, rows = module._mch_sorted_raw_ids, module._mch_remapped_ids_mapping
        assert isinstance(raw, torch.Tensor) and isinstance(rows, torch.Tensor)
        held = raw != torch.iinfo(torch.int64).max
        return raw[held].clone(), rows[held].clone()


def _make_room(module: MCHManagedCollisionModule, incoming: int) -> None:
    """Grows the module's id history so that ``incoming`` more ids fit before the next
    admission: torchrec sizes it from the first step and silently drops ids that overflow it
    (a step of multi-valued features may well carry more ids than the first)."""
    size, used = module._input_history_buffer_size, module._current_history_buffer_offset
    if size == -1 or used + incoming <= size:
        return
    grown = max(2 * size, used + incoming)
    accumulator = module._history_accumulator.new_empty(grown)
    accumulator[:used] = module._history_accumulator[:used]
    module._history_accumulator = accumulator
    for name, old in list(module._history_metadata.items()):
        new = old.new_zeros(grown)
        new[:used] = old[:used]
        module.register_buffer("_history_" + name, new, persistent=False)
        module._history_metadata[name] = new
    module._input_history_buffer_size = grown
