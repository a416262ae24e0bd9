"""Writes a serving bundle from an unsharded model.

Layout of ``DIR``:
    manifest.json           feature order, tables, pooling, id transforms, dense columns, tasks
                            and their meaning, outputs, the post-hoc calibration (each task's
                            calibrator, or null), library versions, sha256 of every file
    embeddings.safetensors  one tensor per table, ``[num_embeddings, dim]`` (the tables of
                            behaviour sequences too)
    dense.pt2               ``torch.export`` program: ``pooled [B, P], dense [B, D] -> {task: p}``
                            with a dynamic batch dimension; with behaviour sequences, each
                            sequence's ``values [T, D], lengths [B]`` follow (dynamic T,
                            ``recmtl.export.histories``) and ``pooled`` omits their blocks
    dense.onnx              the same function in ONNX (inputs named as ``manifest["inputs"]``,
                            outputs after the tasks)
    dense.aoti.pt2          optional: AOTInductor-compiled package of ``dense.pt2``
    managed/<table>.safetensors  a managed-collision table's id -> row mapping: ``ids`` (sorted
                            raw ids) and ``rows``; other ids read the table's last row
    tables/<table>.parquet  optional: ``id int64, vector list<float32>`` for a key-value store
    raw/transforms.json     when the training data came from ``recmtl prepare``: its fitted
    raw/vocab/*.parquet     transforms, so the scorer also takes raw feature-store rows
                            (``recmtl.export.raw``)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import safetensors.torch
import torch
from torch import nn

from recmtl.config import Config, TaskConfig
from recmtl.data.files import open_filesystem
from recmtl.export.checksum import sha256
from recmtl.export.histories import SequenceBlocks, example_histories, history_shapes, input_names
from recmtl.losses import task_probabilities
from recmtl.metrics.calibrate import FittedCalibration, calibrated_probabilities
from recmtl.modules.calibration import TaskCalibrators
from recmtl.modules.ranker import DenseRanker, MultiTaskRanker

BUNDLE_FORMAT = "recmtl-bundle/1"


class ServingDense(nn.Module):
    """``pooled [B, P], dense [B, D] -> {task: probability [B]}`` for the ``outputs`` tasks
    (composed tasks are computed from their parts even when the parts are not served).
    With ``calibrators``, each binary task's logit goes through its post-hoc calibrator and
    composed tasks are the product of the calibrated parts; the output names stay the same."""

    def __init__(self, dense_ranker: DenseRanker, tasks: tuple[TaskConfig, ...],
                 outputs: list[str], calibrators: TaskCalibrators | None = None,
                 sequences: SequenceBlocks | None = None) -> None:
        super().__init__()
        self.dense_ranker = dense_ranker
        self.tasks = tasks
        self.outputs = list(outputs)
        self.calibrators = calibrators
        self.sequences = sequences

    def forward(self, pooled: torch.Tensor, dense: torch.Tensor,
                *histories: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.sequences is not None:
            pooled = self.sequences(pooled, list(histories))
        logits = self.dense_ranker(pooled, dense)
        if self.calibrators is None:
            probs = task_probabilities(logits, self.tasks)
        else:
            probs = calibrated_probabilities(logits, self.tasks, self.calibrators)
        return {name: probs[name] for name in self.outputs}


def export_bundle(model: MultiTaskRanker, cfg: Config, out_dir: str | Path,
                  example_pooled: torch.Tensor, example_dense: torch.Tensor,
                  calibration: FittedCalibration | None = None) -> dict[str, Any]:
    """Exports ``model`` (eval mode, CPU) into ``out_dir``; returns the manifest.

    ``calibration``: the post-hoc calibrators ``evaluate.calibration`` asks for, fit on the
    valid split (``recmtl.metrics.calibrate``); the bundle then serves calibrated
    probabilities. Required exactly when the config asks for calibration, and of its method.
    """
    method = cfg.evaluate.calibration
    if (calibration.method if calibration else "none") != method:
        raise ValueError(f"evaluate.calibration is {method!r} but the calibration passed is "
                         f"{calibration.method if calibration else None!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    outputs = list(cfg.export.tasks) or [t.name for t in cfg.tasks]
    tables = _unsharded_tables(model)
    files = ["embeddings.safetensors", "dense.pt2"]
    safetensors.torch.save_file(tables, str(out / "embeddings.safetensors"))

    calibrators = calibration.calibrators if calibration else None
    dims = {t.name: t for t in cfg.features.tables}
    widths = [(f.name, dims[f.table].dim) for f in cfg.features.sparse]
    blocks = (SequenceBlocks(widths, model.sequence_features)
              if model.sequence_features is not None else None)
    serving = ServingDense(model.dense_ranker, cfg.tasks, outputs, calibrators, blocks).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    shapes: dict[str, Any] = {"pooled": {0: batch}, "dense": {0: batch}}
    example: tuple[torch.Tensor, ...] = (example_pooled, example_dense)
    names = ["pooled", "dense"]
    if blocks is not None:  # the pooled input holds the other features' blocks only
        example = (_rest_columns(example_pooled, widths, blocks), example_dense,
                   *example_histories(blocks, dict(widths), example_dense.shape[0]))
        shapes["histories"] = tuple(history_shapes(blocks, batch))
        names += input_names(blocks.sequences)
    program = torch.export.export(serving, example, dynamic_shapes=shapes)
    torch.export.save(program, str(out / "dense.pt2"))
    if cfg.export.onnx:
        # From the program above: tracing the model a second time doubled the export's time.
        # Its dict outputs flatten in ``outputs`` order, which names them.
        torch.onnx.export(program, f=str(out / "dense.onnx"), dynamo=True, input_names=names,
                          output_names=outputs, verbose=False)
        files.append("dense.onnx")
    if cfg.export.aot_inductor:
        torch._inductor.aoti_compile_and_package(program, package_path=str(out / "dense.aoti.pt2"))
        files.append("dense.aoti.pt2")
    if cfg.export.parquet_tables:
        (out / "tables").mkdir(exist_ok=True)
        for name, weight in tables.items():
            _write_table_parquet(weight, out / "tables" / f"{name}.parquet")
            files.append(f"tables/{name}.parquet")

    raw = _copy_raw_transforms(cfg.data.root, out)
    files += raw
    managed = _write_managed(model, out)
    files += managed.values()

    features, offset = [], 0
    for f in cfg.features.sparse:
        t = dims[f.table]
        seq = ({"query": f.sequence.query, "max_len": f.sequence.max_len,
                "encoder": f.sequence.encoder, "side": list(f.sequence.side)}
               if f.sequence is not None else None)
        features.append({"name": f.name, "table": f.table, "multi_valued": f.multi_valued,
                         "pooling": t.pooling, "dim": t.dim,
                         "offset": offset if seq is None else None, "sequence": seq,
                         "id_transform": _id_transform(t.name, t.num_embeddings, managed)})
        offset += t.dim if seq is None else 0
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "sparse_features": features,
        "pooled_width": offset,
        "inputs": names,
        "tables": [{"name": t.name, "num_embeddings": t.num_embeddings, "dim": t.dim}
                   for t in cfg.features.tables if t.name in tables],
        "dense_features": list(cfg.features.dense),
        "dense_normalisation": None,
        "tasks": [_task_entry(t) for t in cfg.tasks],
        "outputs": outputs,
        "calibration": calibration.describe() if calibration else None,
        "raw_transforms": "raw/transforms.json" if raw else None,
        "versions": _versions(),
        "files": {name: sha256(out / name) for name in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _unsharded_tables(model: MultiTaskRanker) -> dict[str, torch.Tensor]:
    """Every table, pooled (the bags) or not (the tables behaviour sequences read)."""
    tables: dict[str, torch.Tensor] = {}
    if model.embeddings is not None:
        tables |= {name: bag.weight for name, bag in model.embeddings.embedding_bags.items()}
    if model.sequence_embeddings is not None:
        tables |= {name: table.weight
                   for name, table in model.sequence_embeddings.embeddings.items()}
    return {name: w.detach().contiguous().clone() for name, w in tables.items()}


def _rest_columns(pooled: torch.Tensor, widths: list[tuple[str, int]],
                  blocks: SequenceBlocks) -> torch.Tensor:
    """The non-sequence features' columns of the model's full ``pooled [B, P]``."""
    keep, offset = [], 0
    for name, width in widths:
        if name not in blocks.sequences:
            keep.append(pooled[:, offset:offset + width])
        offset += width
    return torch.cat(keep, dim=1)


def _write_managed(model: MultiTaskRanker, out: Path) -> dict[str, str]:
    """``{table: file}`` of the managed tables' id -> row mappings."""
    if model.managed_ids is None:
        return {}
    (out / "managed").mkdir(exist_ok=True)
    files = {}
    for table in model.managed_ids.tables:
        ids, rows = model.managed_ids.mapping(table)
        files[table] = f"managed/{table}.safetensors"
        safetensors.torch.save_file({"ids": ids.contiguous(), "rows": rows.contiguous()},
                                    str(out / files[table]))
    return files


def _id_transform(table: str, num_embeddings: int, managed: dict[str, str]) -> dict[str, Any]:
    if table not in managed:
        return {"kind": "identity", "num_embeddings": num_embeddings}
    return {"kind": "managed_collision", "num_embeddings": num_embeddings,
            "mapping": managed[table], "default_row": num_embeddings - 1}


def _copy_raw_transforms(data_root: str, out: Path) -> list[str]:
    """Copies ``transforms.json`` and the vocabularies it names from the data root (any pyarrow
    filesystem), if ``recmtl prepare`` wrote one; returns the bundle paths written."""
    fs, base = open_filesystem(data_root)
    source = f"{base.rstrip('/')}/transforms.json"
    if fs.get_file_info(source).type != pafs.FileType.File:
        return []
    with fs.open_input_stream(source) as f:
        text = f.read()
    names = ["transforms.json"] + sorted({e["vocab"] for e in json.loads(text)["sparse"]
                                          if e.get("vocab")})
    for name in names:
        target = out / "raw" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(f"{base.rstrip('/')}/{name}") as f:
            target.write_bytes(f.read())
    return [f"raw/{name}" for name in names]


def _write_table_parquet(weight: torch.Tensor, path: Path) -> None:
    n, dim = weight.shape
    flat = pa.array(weight.numpy().reshape(-1).astype(np.float32))
    vectors = pa.FixedSizeListArray.from_arrays(flat, dim)
    pq.write_table(pa.table({"id": pa.array(np.arange(n, dtype=np.int64)), "vector": vectors}),
                   path)


def _task_entry(t: TaskConfig) -> dict[str, Any]:
    if t.kind == "regression":
        meaning = f"E[{t.label}" + (f" | {t.space}=1]" if t.space else "]")
    elif t.product_of:
        meaning = f"P({t.label}=1) = " + " x ".join(t.product_of)
    elif t.space:
        meaning = f"P({t.label}=1 | {t.space}=1)"
    else:
        meaning = f"P({t.label}=1)"
    return {"name": t.name, "kind": t.kind, "label": t.label, "space": t.space,
            "product_of": list(t.product_of), "meaning": meaning}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("recmtl", "torch", "torchrec", "safetensors", "onnx", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
