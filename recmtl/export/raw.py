"""Raw feature-store rows -> the training columns a model was fit on, for serving.

``recmtl prepare`` turns a raw export into training columns (vocabulary or hashed ids, log1p
and standardised floats, bucketised floats) and writes what it fit to ``transforms.json`` and
``vocab/``. A bundle exported from that data carries both, and this module replays them on
raw rows with pyarrow and numpy (no polars, no torchrec), so an online ranker sends the same
values the feature store exported. The reference is prepare's own output: the bundle tests
compare the two row by row.

The rules, as prepare applies them: a value's text (integers in decimal, strings as they are)
maps through the vocabulary to its id (``1..V`` when fresh; an incremental preparation may
leave the rows of retired values free), or to 0 when unseen; ``hash`` is blake2b-64 of the
text, mod ``size - 1``, plus 1; ``managed`` is blake2b-64 of the text shifted right by one
bit (a raw id for the bundle's managed-collision mapping); null ids are 0 under
``nulls.sparse: oov`` and an error under ``error``, a null list is empty; ``identity`` ids pass
as they are, to the scorer's own checks.
Dense values go through ``log1p``, then ``(x - mean) / std``; nulls take the fill (0 when
standardised, else the train mean) under ``nulls.dense: mean``. A bucketised float becomes ids
``1 + #(boundaries <= x)``, 0 for null. NaN or infinite floats are errors, as in prepare.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recmtl.export.inputs import BundleError

TRANSFORMS_FORMAT = "recmtl-transforms/1"


def blake2b64(texts: Iterable[str]) -> np.ndarray:
    """uint64 per text: blake2b with an 8-byte digest of its UTF-8 bytes, read little-endian.
    The id hash of ``recmtl prepare`` and of serving; no library version changes it."""
    return np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
                     for t in texts], dtype=np.uint64)


class RawTransforms:
    """``transforms.json`` and its vocabularies, loaded once; ``apply(table)`` per request."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        spec = json.loads(self.path.read_text())
        if spec.get("format") != TRANSFORMS_FORMAT:
            raise BundleError(f"{self.path}: format {spec.get('format')!r}; expected "
                              f"{TRANSFORMS_FORMAT!r}")
        self.spec = spec
        self.vocabs: dict[str, pa.Array] = {}
        self.vocab_ids: dict[str, np.ndarray] = {}
        for f in spec["sparse"]:
            if f["transform"] == "vocab" and f["table"] not in self.vocabs:
                vocab = pq.read_table(self.path.parent / f["vocab"], columns=["value", "id"])
                ids = vocab.column("id").to_numpy().astype(np.int64)
                if len(ids) and (ids.min() < 1 or ids.max() >= f["size"]
                                 or len(np.unique(ids)) != len(ids)):
                    raise BundleError(f"{f['vocab']}: ids must be distinct and in "
                                      f"[1, {f['size']})")
                self.vocabs[f["table"]] = vocab.column("value").combine_chunks().cast(pa.string())
                self.vocab_ids[f["table"]] = ids

    @property
    def columns(self) -> list[str]:
        """The raw columns read, each once."""
        entries = self.spec["sparse"] + self.spec["bucketized"] + self.spec["dense"]
        return list(dict.fromkeys(e["column"] for e in entries))

    def apply(self, table: pa.Table, where: str = "input") -> pa.Table:
        """Raw rows -> the training columns (int64 ids or lists of them, float32 dense)."""
        out: dict[str, pa.Array] = {}
        for f in self.spec["sparse"]:
            col = _column(table, f["column"], where)
            if f["transform"] == "identity":  # the scorer's own checks (nulls, range) apply
                out[f["name"]] = col
            elif f["multi_valued"]:
                if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
                    raise BundleError(f"{where}: column {f['column']!r} has type {col.type}; "
                                      "expected a list of ids")
                lists = col.fill_null(pa.scalar([], col.type))
                if f.get("max_len") is not None:
                    lists = _tail(lists, f["max_len"])
                ids = self._ids(lists.flatten(), f, where)
                offsets = pc.subtract(lists.offsets, lists.offsets[0]).cast(pa.int32())
                out[f["name"]] = pa.ListArray.from_arrays(offsets, pa.array(ids))
            else:
                out[f["name"]] = pa.array(self._ids(col, f, where))
        for d in self.spec["bucketized"]:
            x = _floats(table, d["column"], where)
            ids = 1 + np.searchsorted(np.asarray(d["boundaries"]), x, side="right")
            out[d["name"]] = pa.array(np.where(np.isnan(x), 0, ids).astype(np.int64))
        for d in self.spec["dense"]:
            x = _floats(table, d["column"], where)
            if np.isnan(x).any() and self.spec["nulls"]["dense"] == "error":
                raise BundleError(f"{where}: column {d['column']!r} has null values "
                                  "(nulls.dense: error)")
            if d["log1p"]:
                x = np.log1p(x)
            if d["standardize"]:
                x = (x - d["mean"]) / d["std"]
            out[d["name"]] = pa.array(np.where(np.isnan(x), d["fill"], x).astype(np.float32))
        return pa.table(out)

    def single_ids(self, table: pa.Table, names: list[str], where: str = "input"
                   ) -> dict[str, np.ndarray]:
        """int64 ids [n] of the single-valued vocabulary or hash features ``names`` of raw
        rows, as ``apply`` maps them (reading only their columns)."""
        by_name = {f["name"]: f for f in self.spec["sparse"]}
        return {n: self._ids(_column(table, by_name[n]["column"], where), by_name[n], where)
                for n in names}

    def _ids(self, values: pa.Array, f: dict[str, Any], where: str) -> np.ndarray:
        """Vocabulary or hashed ids of raw values (null: the OOV id 0, or an error)."""
        if values.null_count and self.spec["nulls"]["sparse"] == "error":
            raise BundleError(f"{where}: column {f['column']!r} has {values.null_count} null "
                              "id(s); expected none (nulls.sparse: error)")
        text = _text(values, f["column"], where)
        if f["transform"] == "vocab":
            position = pc.index_in(text, value_set=self.vocabs[f["table"]])
            found = pc.fill_null(position, -1).to_numpy().astype(np.int64)
            ids = self.vocab_ids[f["table"]]
            return np.where(found >= 0, ids[np.maximum(found, 0)] if len(ids) else 0, 0)
        unique, inverse = np.unique(np.asarray(text.fill_null("").to_pylist(), dtype=object),
                                    return_inverse=True)
        digest = blake2b64(unique)
        hashed = ((digest >> np.uint64(1)) if f["transform"] == "managed"  # raw open ids
                  else digest % np.uint64(f["size"] - 1) + np.uint64(1)).astype(np.int64)
        ids = hashed[inverse.reshape(-1)] if len(unique) else np.zeros(0, np.int64)
        return np.where(text.is_null().to_numpy(zero_copy_only=False), 0, ids)


def _tail(lists: pa.Array, n: int) -> pa.Array:
    """Each list's last ``n`` values (a behaviour sequence's most recent ids)."""
    offsets = lists.offsets.to_numpy().astype(np.int64)
    keep = np.minimum(np.diff(offsets), n)
    new_offsets = np.r_[0, np.cumsum(keep)]
    starts = offsets[1:] - keep
    take = np.repeat(starts - new_offsets[:-1], keep) + np.arange(new_offsets[-1])
    values = lists.values.take(pa.array(take, pa.int64()))  # offsets index the whole buffer
    return pa.ListArray.from_arrays(pa.array(new_offsets.astype(np.int32)), values)


def _column(table: pa.Table, name: str, where: str) -> pa.Array:
    if name not in table.column_names:
        raise BundleError(f"{where}: input lacks raw column {name!r} required by the bundle")
    return table.column(name).combine_chunks()


def _text(values: pa.Array, column: str, where: str) -> pa.Array:
    """Ids as prepare saw them: integers in decimal, strings as they are (dictionary-encoded
    columns, as warehouses write low-cardinality strings, by their values)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    t = values.type
    if pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return values.cast(pa.string())
    raise BundleError(f"{where}: column {column!r} has {values.type} ids; expected integers "
                      "or strings")


def _floats(table: pa.Table, name: str, where: str) -> np.ndarray:
    """float64 with nulls as NaN; a NaN or infinite value stored as such is an error."""
    col = _column(table, name, where)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise BundleError(f"{where}: column {name!r} has type {col.type}; expected numbers")
    x = col.cast(pa.float64()).fill_null(0.0).to_numpy()
    if not np.isfinite(x).all():
        raise BundleError(f"{where}: column {name!r} has NaN or infinite values; expected "
                          "finite floats")
    return np.where(col.is_null().to_numpy(zero_copy_only=False), np.nan, x)
