"""Reference scorer for a bundle: raw ids + dense floats -> per-task scores, plain torch only.

No torchrec, no Ray: what an online ranker needs to reproduce. Ids arrive per feature as
``(values [N], offsets [B + 1])`` (CSR); a single-valued feature has offsets ``0..B``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F


class BundleError(ValueError):
    """A bundle is incomplete, corrupt, or was given input it cannot score."""


class BundleScorer:
    def __init__(self, bundle_dir: str | Path) -> None:
        self.dir = Path(bundle_dir)
        manifest_path = self.dir / "manifest.json"
        if not manifest_path.exists():
            raise BundleError(f"{self.dir}: missing manifest.json")
        self.manifest = json.loads(manifest_path.read_text())
        for name, expected in self.manifest["files"].items():
            path = self.dir / name
            if not path.exists():
                raise BundleError(f"{self.dir}: missing {name} listed in manifest.json")
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != expected:
                raise BundleError(f"{path}: sha256 {actual} does not match manifest {expected}")
        self.tables = safetensors.torch.load_file(str(self.dir / "embeddings.safetensors"))
        self.program = torch.export.load(str(self.dir / "dense.pt2")).module()
        self.features = self.manifest["sparse_features"]
        self.dense_features = self.manifest["dense_features"]

    def pooled(self, ids: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``[B, pooled_width]``: each feature's bag pooled from its table, in manifest order."""
        parts = []
        for f in self.features:
            if f["name"] not in ids:
                raise BundleError(f"input lacks sparse feature {f['name']!r} required by the bundle")
            values, offsets = ids[f["name"]]
            parts.append(F.embedding_bag(values.long(), self.tables[f["table"]], offsets.long(),
                                         mode=f["pooling"], include_last_offset=True))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def score(self, ids: dict[str, tuple[torch.Tensor, torch.Tensor]],
              dense: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{task: probability [B]}``. ``dense`` columns in ``manifest["dense_features"]`` order."""
        if dense.shape[1] != len(self.dense_features):
            raise BundleError(f"dense input has {dense.shape[1]} columns; the bundle expects "
                              f"{len(self.dense_features)}: {self.dense_features}")
        return self.program(self.pooled(ids), dense.float())
