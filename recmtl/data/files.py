"""Where Parquet files are: a local path or any pyarrow filesystem URI. No torch here, so data
preparation and listings start fast."""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from recmtl.errors import DataError


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A local path or any URI pyarrow understands (``file://``, ``s3://``, ``gs://``...)."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (OSError, ValueError) as e:  # an unknown scheme, a malformed URI
            raise DataError(f"{uri}: {' '.join(str(e).split())}") from None
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def list_parquet_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """The filesystem of ``uri`` and the Parquet files at or under it, sorted."""
    fs, base = open_filesystem(uri)
    try:  # object storage: an endpoint that does not answer, access denied
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"{uri}: no such file or directory")
        if info.type == pafs.FileType.File:
            paths = [base]
        else:
            selector = pafs.FileSelector(base, recursive=True)
            paths = sorted(i.path for i in fs.get_file_info(selector)
                           if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    except OSError as e:
        raise DataError(f"{uri}: cannot list it ({' '.join(str(e).split())})") from None
    if not paths:
        raise DataError(f"{uri}: no .parquet files found")
    return fs, paths
