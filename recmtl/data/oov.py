"""Out-of-vocabulary dropout: training batches send a share of rare ids to the OOV row.

A vocabulary (``recmtl prepare``, transform ``vocab``) is fit on the train split itself, so
every id a train row carries has a row of its own and the OOV row 0 is read only by nulls
(and, with ``min_count`` > 1, by the values below it). Ids born after the preparation all read
row 0 in evaluation and serving, a row training never moved. Here, in training batches only,
each occurrence of a *rare* id (seen at most ``max_count`` times in the preparation's train
split: ``count`` in ``vocab/<table>.parquet``) is replaced by 0 with probability ``rate``, so
row 0 learns what a little-known item (user, ...) looks like. Validation, test and serving
batches never pass through here.

Draws: one generator per batch, seeded by ``(seed, epoch, rank, batch index)``: a run is
reproducible, a resumed epoch redraws its remaining batches exactly, and ranks draw
independently. Every rank reads the same vocabulary files, so all apply one rule.

Notation: B = rows, F = sparse features; the KJT layout is the one of ``recmtl.data.batch``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.data.batch import Batch
from recmtl.data.files import open_filesystem
from recmtl.errors import DataError
from recmtl.storage import read_text

OOV_ID = 0
_STREAM = 0x00F0_0D  # keeps these draws apart from the reader's shuffle of the same seed


def vocab_features(transforms: dict) -> dict[str, tuple[str, str, bool]]:
    """``{feature: (table, vocab file, multi_valued)}`` of the vocabulary features in a
    ``transforms.json``."""
    return {f["name"]: (f["table"], f["vocab"], bool(f["multi_valued"]))
            for f in transforms.get("sparse", []) if f.get("transform") == "vocab"}


def rare_ids(root: str, max_count: int, features: Iterable[str] | None = None
             ) -> dict[str, np.ndarray]:
    """``{feature: sorted int64 ids}``: per vocabulary feature of the preparation at ``root``
    (one of ``features``, when given), the ids of its table counted 1 .. ``max_count`` times in
    train. Empty when ``root`` has no ``transforms.json`` (data not from ``recmtl prepare``)."""
    text = read_text(root, "transforms.json")
    if text is None:
        return {}
    wanted = None if features is None else set(features)
    fs, base = open_filesystem(root)
    by_table: dict[str, np.ndarray] = {}
    out = {}
    for name, (table, vocab, _) in vocab_features(json.loads(text)).items():
        if wanted is not None and name not in wanted:
            continue
        if table not in by_table:
            path = f"{base.rstrip('/')}/{vocab}"
            try:
                with fs.open_input_file(path) as f:
                    t = pq.read_table(f, columns=["id", "count"])
            except (OSError, KeyError) as e:
                raise DataError(f"{path}: cannot read the vocabulary's id and count ({e})"
                                ) from None
            count = t.column("count")
            keep = pc.and_(pc.greater_equal(count, 1), pc.less_equal(count, max_count))
            ids = t.column("id").filter(keep).to_numpy()
            by_table[table] = np.sort(ids.astype(np.int64))
        out[name] = by_table[table]
    return out


@dataclass(frozen=True)
class OovDropout:
    """``apply(batch, epoch, index)``: the training batch with rare ids sent to the OOV id.

    Args:
        rare: ``{feature: sorted rare ids}`` (``rare_ids``); other features pass unchanged.
        rate: probability that one occurrence of a rare id is replaced.
        seed, rank: the run's seed and this rank (the draws' streams).
    """

    rare: dict[str, np.ndarray]
    rate: float
    seed: int
    rank: int = 0

    def mask(self, values: np.ndarray, rare: np.ndarray, rng: np.random.Generator
             ) -> np.ndarray:
        """Which of ``values`` [n] are replaced: rare ones, each with probability ``rate``.
        Draws one uniform per value, rare or not, so the stream does not depend on rarity."""
        draws = rng.random(len(values))
        if not len(rare):
            return np.zeros(len(values), dtype=bool)
        at = np.searchsorted(rare, values).clip(max=len(rare) - 1)
        return (rare[at] == values) & (draws < self.rate)

    def apply(self, batch: Batch, epoch: int, index: int) -> tuple[Batch, int]:
        """``(batch with replacements, ids replaced)``; batch ``index`` of ``epoch`` on this
        rank (counted from the epoch's first batch, resumed or not)."""
        sparse = batch.sparse
        if self.rate <= 0 or not any(k in self.rare for k in sparse.keys()):
            return batch, 0
        rng = np.random.default_rng([self.seed, _STREAM, epoch, self.rank, index])
        values = sparse.values().numpy().copy()
        bounds = sparse.offset_per_key()
        replaced = 0
        for i, key in enumerate(sparse.keys()):
            rare = self.rare.get(key)
            if rare is None:
                continue
            part = values[bounds[i]:bounds[i + 1]]  # a view: replaced in place
            hit = self.mask(part, rare, rng)
            part[hit] = OOV_ID
            replaced += int(hit.sum())
        new = KeyedJaggedTensor(keys=sparse.keys(), values=torch.from_numpy(values),
                                lengths=sparse.lengths(), weights=sparse.weights_or_none())
        return Batch(dense=batch.dense, sparse=new, labels=batch.labels, group=batch.group,
                     extras=batch.extras), replaced
