"""Artifacts by URI: a local path by default, ``s3://``/``gs://`` through pyarrow.

Steps write to local scratch space and publish with :func:`upload_dir`; readers
that need local files call :func:`download_dir`. Checksums make every
published file verifiable (`sha256_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names object storage or another filesystem than this machine's (``s3://``, ``gs://``)."""
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def join(uri: str, *parts: str) -> str:
    """``join("s3://b/home", "cache", "x.json") -> "s3://b/home/cache/x.json"``."""
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *parts])
    return str(_local(uri).joinpath(*parts))


def absolute(uri: str) -> str:
    """Local paths become absolute (Ray workers may run in another directory)."""
    return uri if is_remote(uri) else str(_local(uri).resolve())


def exists(uri: str) -> bool:
    if not is_remote(uri):
        return _local(uri).exists()
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: readers see the old file or the whole new one (object stores replace whole objects)."""
    if not is_remote(uri):
        path = _local(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return
    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_text(uri: str) -> str:
    if not is_remote(uri):
        return _local(uri).read_text()
    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def write_table(table, uri: str) -> None:
    """A pandas frame (no index) or an Arrow table as one Parquet file, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False), sink)
    write_bytes(uri, sink.getvalue().to_pybytes())


def remove(uri: str) -> None:
    if not is_remote(uri):
        shutil.rmtree(_local(uri), ignore_errors=True)
        return
    fs, path = pafs.FileSystem.from_uri(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a local folder to ``uri`` (a no-op when they are the same place)."""
    if not is_remote(uri):
        dest = _local(uri)
        if dest.resolve() == Path(local_dir).resolve():
            return
        shutil.copytree(local_dir, dest, dirs_exist_ok=True)
        return
    pafs.copy_files(str(local_dir), uri, destination_filesystem=None)


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Make ``uri`` available as a local folder; local URIs are used in place."""
    if not is_remote(uri):
        return _local(uri)
    pafs.copy_files(uri, str(local_dir))
    return Path(local_dir)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
