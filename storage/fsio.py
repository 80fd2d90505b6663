"""Whole objects read and written under a store, through fsspec's public API.

Zarr reads and writes the arrays; this module holds what is not a Zarr node: the
tables' Parquet parts and the root document when metadata is consolidated. Every write is
atomic: on a local folder a temporary file renamed over the target (``os.replace``), on an
object store a single PUT, which readers see whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import fsspec
import zarr
from fsspec.implementations.local import LocalFileSystem
from zarr.storage import FsspecStore, LocalStore

from seismoflow.errors import StoreError

# Names of temporary files start with this: readers and listings skip them.
TEMP_PREFIX = ".tmp-"


def is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


# Object-store protocols whose filesystem takes ``S3_OPTIONS`` (s3fs).
S3_PROTOCOLS = ("s3://", "s3a://")
# s3fs reads a whole object (no byte range) as one ranged download per 50 MB part when
# ``max_concurrency`` > 1, and first asks the object's size for that: a HEAD before every
# GET of a document, a table part or a partial shard (and a LIST after each HEAD that
# finds nothing). The store's objects are small, so they are read with one GET.
S3_OPTIONS: dict[str, Any] = {"max_concurrency": 1}


def storage_options(location: str) -> dict[str, Any]:
    """fsspec options for a store location: the same for zarr's store and for ours."""
    return dict(S3_OPTIONS) if location.startswith(S3_PROTOCOLS) else {}


@lru_cache(maxsize=64)
def filesystem(location: str) -> tuple[Any, str]:
    """``(fs, root path)`` of a store location (a folder or an fsspec URL).

    Credentials and endpoints come from the environment (``AWS_*``,
    ``FSSPEC_S3_ENDPOINT_URL``), never from the location, so nothing secret is logged.
    """
    if is_local(location):
        return LocalFileSystem(), str(local_path(location))
    fs, path = fsspec.core.url_to_fs(location, **storage_options(location))
    return fs, str(path).rstrip("/")


def join(base: str, key: str) -> str:
    return f"{base.rstrip('/')}/{key.lstrip('/')}" if key else base


def read_bytes(location: str, key: str) -> bytes | None:
    """The object at ``key`` under the store (``None`` if there is none)."""
    fs, base = filesystem(location)
    try:
        return bytes(fs.cat_file(join(base, key)))
    except FileNotFoundError:
        return None


def write_bytes(location: str, key: str, raw: bytes) -> None:
    """Write ``key`` atomically: readers see the old object or the new one, never a part."""
    fs, base = filesystem(location)
    path = join(base, key)
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        tmp = target.with_name(f"{TEMP_PREFIX}{target.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            try:
                tmp.write_bytes(raw)
            except FileNotFoundError:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(raw)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    fs.pipe_file(path, raw)


def write_many(location: str, objects: dict[str, bytes]) -> None:
    """Write several objects, each atomically (:func:`write_bytes`); on object stores the
    PUTs go out concurrently (fsspec's ``pipe`` of a mapping)."""
    if not objects:
        return
    fs, base = filesystem(location)
    if isinstance(fs, LocalFileSystem):
        for key, raw in objects.items():
            write_bytes(location, key, raw)
        return
    fs.pipe({join(base, key): raw for key, raw in objects.items()})


def list_names(location: str, prefix: str) -> list[str]:
    """Names (not paths) of the objects directly under ``prefix``, temporary files left
    out; empty if there is no such folder."""
    fs, base = filesystem(location)
    folder = join(base, prefix)
    try:
        entries = fs.ls(folder, detail=False, refresh=True) if not isinstance(
            fs, LocalFileSystem
        ) else os.listdir(folder)
    except FileNotFoundError:
        return []
    names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]
    return sorted(n for n in names if not n.startswith(TEMP_PREFIX))


def delete(location: str, key: str) -> None:
    """Remove ``key`` if it exists."""
    fs, base = filesystem(location)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(join(base, key))


def read_many(location: str, keys: list[str]) -> list[bytes | None]:
    """The objects at ``keys`` (``None`` where there is none), fetched concurrently on
    object stores (fsspec's ``cat`` of a list); any other failure to read one raises, as
    :func:`read_bytes` does."""
    fs, base = filesystem(location)
    paths = [join(base, k) for k in keys]
    if not paths:
        return []
    found = fs.cat(paths, on_error="return")
    # fsspec keys the result by path as it normalises it
    norm = {str(k).rstrip("/").split("://", 1)[-1]: v for k, v in found.items()}
    out: list[bytes | None] = []
    for path in paths:
        value = norm.get(path.split("://", 1)[-1])
        if isinstance(value, FileNotFoundError):
            value = None
        elif isinstance(value, BaseException):
            raise value
        out.append(None if value is None else bytes(value))
    return out


def store_location(root: zarr.Group | zarr.Array) -> str:
    """The location (folder or URL) of the store ``root`` was opened from."""
    store = root.store
    if isinstance(store, LocalStore):
        return str(store.root)
    if isinstance(store, FsspecStore):
        return str(store.fs.unstrip_protocol(store.path))
    raise StoreError(f"a store of type {type(store).__name__} has no location for its tables")
