"""A fingerprint of a feature store: its files, their sizes and schemas, hashed. Two runs with
the same fingerprint read the same bytes (short of an in-place rewrite of equal size)."""

from __future__ import annotations

import hashlib

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recmtl.data.files import open_filesystem


def data_fingerprint(root: str, splits: tuple[str, ...] = ("train", "valid", "test")) -> str:
    fs, base = open_filesystem(root)
    h = hashlib.sha256()
    for split in splits:
        selector = pafs.FileSelector(f"{base}/{split}", recursive=True, allow_not_found=True)
        files = sorted((i for i in fs.get_file_info(selector)
                        if i.type == pafs.FileType.File and i.path.endswith(".parquet")),
                       key=lambda i: i.path)
        for info in files:
            h.update(f"{info.path.removeprefix(base)}\0{info.size}\0".encode())
        if files:
            with fs.open_input_file(files[0].path) as f:
                h.update(str(pq.ParquetFile(f).schema_arrow).encode())
    return h.hexdigest()[:16]
