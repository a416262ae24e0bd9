"""What the reader needs to know about the columns, derived from the run config."""

from __future__ import annotations

from dataclasses import dataclass

from recmtl.config import Config

# A managed-collision table's raw ids: any int64 but its maximum, torchrec's empty-slot mark.
OPEN_ID_SPACE = 2**63 - 1


@dataclass(frozen=True)
class SparseColumn:
    name: str
    num_embeddings: int  # valid ids are 0 .. num_embeddings - 1
    multi_valued: bool


@dataclass(frozen=True)
class FeatureSchema:
    """Column roles in the training Parquet: sparse ids, dense floats, {0,1} labels, regression
    targets (finite floats) and extras."""

    sparse: tuple[SparseColumn, ...]
    dense: tuple[str, ...]
    labels: tuple[str, ...]
    group: str | None = None
    extras: tuple[str, ...] = ()  # float columns carried along, e.g. oracle probabilities
    # (child, parent) label pairs where child = 1 requires parent = 1 (conversion needs click)
    label_implies: tuple[tuple[str, str], ...] = ()
    targets: tuple[str, ...] = ()  # regression labels, delivered beside the labels
    # (side, sequence) list pairs that must have equal lengths in every row (``sequence.side``)
    aligned: tuple[tuple[str, str], ...] = ()


    @property
    def columns(self) -> list[str]:
        cols = [s.name for s in self.sparse] + list(self.dense) + list(self.labels)
        cols += [c for c in self.targets if c not in cols]
        cols += [c for c in (self.group,) if c and c not in cols]
        cols += [c for c in self.extras if c not in cols]
        return cols

    @classmethod
    def from_config(cls, cfg: Config, with_extras: bool = False) -> FeatureSchema:
        tables = {t.name: t for t in cfg.features.tables}
        labels: list[str] = []
        for t in cfg.tasks:
            for col in (t.label if t.kind == "binary" else None, t.space):
                if col and col not in labels:
                    labels.append(col)
        targets = tuple(dict.fromkeys(t.label for t in cfg.tasks if t.kind == "regression"))
        implies = tuple((t.label, t.space) for t in cfg.tasks
                        if t.space and t.space != t.label and t.kind == "binary")
        extras = tuple(t.oracle for t in cfg.tasks if t.oracle) if with_extras else ()
        return cls(
            sparse=tuple(
                SparseColumn(f.name, OPEN_ID_SPACE if tables[f.table].managed_collision
                             else tables[f.table].num_embeddings, f.multi_valued)
                for f in cfg.features.sparse
            ),
            dense=cfg.features.dense,
            labels=tuple(labels),
            group=cfg.features.group,
            extras=extras,
            label_implies=implies,
            targets=tuple(c for c in targets if c not in labels),
            aligned=tuple((side, f.name) for f in cfg.features.sparse if f.sequence
                          for side in f.sequence.side),
        )
