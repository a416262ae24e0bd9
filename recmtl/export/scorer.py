"""Reference scorer for a bundle: raw ids + dense floats -> per-task scores, plain torch only.

No torchrec, no Ray: what an online ranker needs to reproduce. Ids arrive per feature as
``(values [N], offsets [B + 1])`` (CSR); a single-valued feature has offsets ``0..B``. The
dense part runs on one of three backends: ``torch`` (the ``torch.export`` program), ``onnx``
(onnxruntime) or ``aoti`` (the AOTInductor package, when the bundle has one).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import safetensors.torch
import torch
import torch.nn.functional as F

from recmtl.export.checksum import sha256
from recmtl.export.inputs import BundleError, lookup_rows, rows_to_inputs
from recmtl.export.raw import RawTransforms

BACKENDS = ("torch", "onnx", "aoti")
_FILES = {"torch": "dense.pt2", "onnx": "dense.onnx", "aoti": "dense.aoti.pt2"}

__all__ = ["BACKENDS", "BundleError", "BundleScorer"]


class BundleScorer:
    def __init__(self, bundle_dir: str | Path, backend: str = "torch") -> None:
        self.dir = Path(bundle_dir)
        if backend not in BACKENDS:
            raise BundleError(f"backend {backend!r} not in {BACKENDS}")
        manifest_path = self.dir / "manifest.json"
        if not manifest_path.exists():
            raise BundleError(f"{self.dir}: missing manifest.json")
        self.manifest = json.loads(manifest_path.read_text())
        missing = [name for name in self.manifest["files"] if not (self.dir / name).exists()]
        if missing:
            raise BundleError(f"{self.dir}: missing {', '.join(missing)} listed in manifest.json")
        for name, expected in self.manifest["files"].items():
            path = self.dir / name
            actual = sha256(path)
            if actual != expected:
                raise BundleError(f"{path}: sha256 {actual} does not match manifest {expected}")
        if _FILES[backend] not in self.manifest["files"]:
            raise BundleError(f"{self.dir}: no {_FILES[backend]} for backend {backend!r}")
        self.backend = backend
        self.tables = safetensors.torch.load_file(str(self.dir / "embeddings.safetensors"))
        self.features = self.manifest["sparse_features"]
        self.dense_features = self.manifest["dense_features"]
        self.outputs: list[str] = self.manifest["outputs"]
        self._dense = self._load_dense(self.dir / _FILES[backend])
        self.managed = {f["name"]: safetensors.torch.load_file(str(self.dir / spec["mapping"]))
                        | {"default": spec["default_row"]}
                        for f in self.features
                        if (spec := f["id_transform"])["kind"] == "managed_collision"}
        raw = self.manifest.get("raw_transforms")
        self.raw = RawTransforms(self.dir / raw) if raw else None

    def _load_dense(self, path: Path) -> Callable[..., dict[str, torch.Tensor]]:
        if self.backend == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            # Pooling runs in torch's thread pool: ORT's workers must not spin against it
            # (spinning gave 30 ms p99 spikes at batch 64 on 2 cores).
            options.intra_op_num_threads = torch.get_num_threads()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = onnxruntime.InferenceSession(str(path), options,
                                                   providers=["CPUExecutionProvider"])

            names = self.manifest.get("inputs", ["pooled", "dense"])

            def run_onnx(*inputs: torch.Tensor) -> dict[str, torch.Tensor]:
                feed = {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
                out = session.run(self.outputs, feed)
                return {k: torch.from_numpy(v) for k, v in zip(self.outputs, out, strict=True)}

            return run_onnx
        if self.backend == "aoti":
            return torch._inductor.aoti_load_package(str(path))
        return torch.export.load(str(path)).module()

    def pooled(self, ids: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``[B, pooled_width]``: each non-sequence feature's bag pooled from its table, in
        manifest order."""
        parts = []
        for f in self.features:
            if f.get("sequence"):
                continue
            values, offsets = _ids_of(ids, f)
            if f["name"] in self.managed:  # raw ids -> the rows they own
                m = self.managed[f["name"]]
                values = lookup_rows(values.long(), m["ids"], m["rows"], m["default"])
            parts.append(F.embedding_bag(values.long(), self.tables[f["table"]], offsets.long(),
                                         mode=f["pooling"], include_last_offset=True))
        return torch.cat(parts, dim=1)

    def histories(self, ids: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Each sequence feature's ``values [T, D]`` (its ids' embeddings, row after row, plus
        at each position the embeddings of its side lists' ids there: training adds them to
        the keys, and padding is linear) and ``lengths [B]``, in manifest order: the graph's
        inputs after ``pooled`` and ``dense``."""
        by_name = {f["name"]: f for f in self.features}
        out = []
        for f in self.features:
            if not f.get("sequence"):
                continue
            values, offsets = self._list_ids(ids, f)
            embedded = F.embedding(values.long(), self.tables[f["table"]])
            for side in f["sequence"].get("side", ()):
                side_values, side_offsets = self._list_ids(ids, by_name[side])
                if not torch.equal(side_offsets, offsets):
                    row = int(torch.nonzero(side_offsets.diff() != offsets.diff())[0])
                    raise BundleError(f"feature {side!r}: row {row} holds "
                                      f"{int(side_offsets.diff()[row])} ids, but its sequence "
                                      f"{f['name']!r} holds {int(offsets.diff()[row])} (a side "
                                      "list has one id per event)")
                embedded = embedded + F.embedding(side_values.long(),
                                                  self.tables[by_name[side]["table"]])
            out += [embedded, offsets.diff()]
        return out

    @staticmethod
    def _list_ids(ids: dict[str, tuple[torch.Tensor, torch.Tensor]], f: dict
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        values, offsets = _ids_of(ids, f)
        offsets = offsets.long()
        if offsets.numel() == 0 or offsets[0] != 0 or offsets[-1] != values.numel():
            raise BundleError(f"feature {f['name']!r}: offsets must run from 0 to the "
                              f"{values.numel()} ids given")
        return values, offsets

    @torch.no_grad()
    def score(self, ids: dict[str, tuple[torch.Tensor, torch.Tensor]],
              dense: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{task: probability [B]}``. ``dense`` columns in ``manifest["dense_features"]`` order."""
        if dense.shape[1] != len(self.dense_features):
            raise BundleError(f"dense input has {dense.shape[1]} columns; the bundle expects "
                              f"{len(self.dense_features)}: {self.dense_features}")
        return self._dense(self.pooled(ids), dense.float().contiguous(), *self.histories(ids))

    def score_rows(self, table: pa.Table, where: str = "input") -> dict[str, torch.Tensor]:
        """Raw feature rows (columns named as in the manifest) -> ``{task: probability}``."""
        ids, dense = rows_to_inputs(table, self.manifest, where)
        return self.score(ids, dense)

    def score_raw(self, table: pa.Table, where: str = "input") -> dict[str, torch.Tensor]:
        """Raw feature-store rows (the columns ``recmtl prepare`` read) -> ``{task: probability}``,
        through the transforms prepare fit."""
        if self.raw is None:
            raise BundleError(f"{self.dir}: the bundle has no raw transforms (its training data "
                              "did not come from recmtl prepare); use score_rows")
        return self.score_rows(self.raw.apply(table, where), where)


def _ids_of(ids: dict[str, tuple[torch.Tensor, torch.Tensor]], feature: dict
            ) -> tuple[torch.Tensor, torch.Tensor]:
    if feature["name"] not in ids:
        raise BundleError(f"input lacks sparse feature {feature['name']!r} required by the bundle")
    return ids[feature["name"]]
