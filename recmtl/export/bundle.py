"""Writes a serving bundle from an unsharded model.

Layout of ``DIR``:
    manifest.json           feature order, tables, pooling, dense columns, tasks, versions, sha256s
    embeddings.safetensors  one tensor per table, ``[num_embeddings, dim]``
    dense.pt2               ``torch.export`` program: ``pooled [B, P], dense [B, D] -> {task: p}``
                            with a dynamic batch dimension
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from recmtl.config import Config, TaskConfig
from recmtl.losses import task_probabilities
from recmtl.modules.ranker import DenseRanker, MultiTaskRanker

BUNDLE_FORMAT = "recmtl-bundle/1"


class ServingDense(nn.Module):
    """``pooled [B, P], dense [B, D] -> {task: probability [B]}``, composed tasks included."""

    def __init__(self, dense_ranker: DenseRanker, tasks: tuple[TaskConfig, ...]) -> None:
        super().__init__()
        self.dense_ranker = dense_ranker
        self.tasks = tasks

    def forward(self, pooled: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        return task_probabilities(self.dense_ranker(pooled, dense), self.tasks)


def export_bundle(model: MultiTaskRanker, cfg: Config, out_dir: str | Path,
                  example_pooled: torch.Tensor, example_dense: torch.Tensor) -> dict[str, Any]:
    """Exports ``model`` (eval mode, CPU) into ``out_dir``; returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    tables = {name: bag.weight.detach().contiguous().clone()
              for name, bag in model.embeddings.embedding_bags.items()}
    safetensors.torch.save_file(tables, str(out / "embeddings.safetensors"))

    serving = ServingDense(model.dense_ranker, cfg.tasks).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(
        serving, (example_pooled, example_dense),
        dynamic_shapes={"pooled": {0: batch}, "dense": {0: batch}},
    )
    torch.export.save(program, str(out / "dense.pt2"))

    dims = {t.name: t for t in cfg.features.tables}
    features, offset = [], 0
    for f in cfg.features.sparse:
        t = dims[f.table]
        features.append({"name": f.name, "table": f.table, "multi_valued": f.multi_valued,
                         "pooling": t.pooling, "dim": t.dim, "offset": offset,
                         "id_transform": {"kind": "identity", "num_embeddings": t.num_embeddings}})
        offset += t.dim
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "sparse_features": features,
        "pooled_width": offset,
        "tables": [{"name": t.name, "num_embeddings": t.num_embeddings, "dim": t.dim}
                   for t in cfg.features.tables if t.name in tables],
        "dense_features": list(cfg.features.dense),
        "dense_normalisation": None,
        "tasks": [_task_entry(t) for t in cfg.tasks],
        "versions": _versions(),
        "files": {name: sha256(out / name) for name in ("embeddings.safetensors", "dense.pt2")},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _task_entry(t: TaskConfig) -> dict[str, Any]:
    if t.product_of:
        meaning = f"P({t.label}=1) = " + " x ".join(t.product_of)
    elif t.space:
        meaning = f"P({t.label}=1 | {t.space}=1)"
    else:
        meaning = f"P({t.label}=1)"
    return {"name": t.name, "label": t.label, "space": t.space,
            "product_of": list(t.product_of), "meaning": meaning}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("recmtl", "torch", "torchrec", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
