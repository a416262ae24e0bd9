"""Directories on object storage (``s3://bucket/prefix``, or any pyarrow filesystem URI) copied
to and from local disk: `recmtl prepare` output, Ray Train checkpoints.

Credentials and the endpoint come from the standard environment variables, read by pyarrow,
boto3 (MLflow's S3 artifact store) and Ray's workers alike: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) and
``AWS_DEFAULT_REGION``. Nothing here reads, prints or stores them; errors name the URI only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

from recmtl.errors import DataError


def is_uri(where: str | Path) -> bool:
    """A filesystem URI (``s3://...``, ``file://...``) rather than a local path."""
    return "://" in str(where)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as e:  # an unknown scheme, a malformed URI
        raise DataError(f"{uri}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """pyarrow's message on one line (it names the bucket and key, never the secret), less its
    hint about an option recmtl does not offer."""
    text = str(e).replace(" To create buckets, enable the allow_bucket_creation option.", "")
    return " ".join(text.split()) or type(e).__name__


def read_text(root: str, name: str) -> str | None:
    """The text of the file ``name`` under ``root`` (a local directory or a URI), or None when
    there is none."""
    if not is_uri(root):
        local = Path(root) / name
        return local.read_text() if local.is_file() else None
    fs, base = _filesystem(root)
    path = f"{base.rstrip('/')}/{name}"
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return bytes(f.read()).decode()
    except OSError as e:
        raise DataError(f"{root.rstrip('/')}/{name}: cannot read it ({_reason(e)})") from None


def check_writable(uri: str) -> tuple[pafs.FileSystem, str]:
    """``uri``'s filesystem and path, once its bucket is known to exist (an object store never
    creates buckets for recmtl); before any work whose output goes there."""
    fs, base = _filesystem(uri)
    try:
        fs.create_dir(base, recursive=True)
    except OSError as e:
        raise DataError(f"{uri}: cannot write there ({_reason(e)})") from None
    return fs, base


def upload_dir(local: str | Path, uri: str) -> None:
    """Copies the files under the local directory ``local`` to ``uri`` (same relative paths,
    replacing objects of the same name)."""
    fs, base = check_writable(uri)
    try:
        pafs.copy_files(str(Path(local).resolve()), base.rstrip("/"),
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    except OSError as e:
        raise DataError(f"{uri}: cannot write there ({_reason(e)})") from None


def download_dir(uri: str, local: str | Path) -> Path:
    """Copies the objects under ``uri`` into the local directory ``local``; returns it."""
    fs, base = _filesystem(uri)
    try:
        info = fs.get_file_info(base)
    except OSError as e:
        raise DataError(f"{uri}: cannot read it ({_reason(e)})") from None
    if info.type != pafs.FileType.Directory:
        raise DataError(f"{uri}: no such directory")
    local = Path(local)
    local.mkdir(parents=True, exist_ok=True)
    try:
        pafs.copy_files(base.rstrip("/"), str(local.resolve()), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
    except OSError as e:
        raise DataError(f"{uri}: cannot read it ({_reason(e)})") from None
    return local


def checkpoint_uri(filesystem: pafs.FileSystem, path: str) -> str:
    """The URI of a Ray Train checkpoint (its ``filesystem`` and ``path``): a local path stays
    as it is, an object-store one becomes ``<scheme>://<bucket>/<key>``."""
    if isinstance(filesystem, pafs.LocalFileSystem):
        return os.path.abspath(path)
    return f"{filesystem.type_name}://{path.lstrip('/')}"
