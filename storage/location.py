"""Opening a store at a path or any fsspec URL, and the lock for structural changes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import zarr

from storage.schema import SCHEMA_VERSION


def is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def open_root(location: str, mode: str = "a") -> zarr.Group:
    """Open (or create, with ``mode='a'``) the store's root group.

    Reads never go through consolidated metadata here: writers must see every node.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if mode == "r":
            return zarr.open_group(location, mode="r", zarr_format=3, use_consolidated=False)
        root = zarr.open_group(location, mode="a", zarr_format=3, use_consolidated=False)
        if "seismoflow_schema" not in root.attrs:
            root.attrs.update({"seismoflow_schema": SCHEMA_VERSION, "title": "seismoflow store"})
        return root


def store_exists(location: str) -> bool:
    try:
        root = open_root(location, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return "seismoflow_schema" in root.attrs


def lock_path(location: str) -> Path:
    """Lock file beside a local store; for remote URLs a per-URL file in the user cache.

    ``flock`` locks are released by the kernel when the holder dies, so a killed run never
    leaves a stale lock behind.
    """
    if is_local(location):
        path = local_path(location)
        return path.parent / f".{path.name}.lock"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seismoflow"
    return cache / f"{hashlib.sha256(location.encode()).hexdigest()[:24]}.lock"


@contextlib.contextmanager
def store_lock(location: str) -> Iterator[None]:
    """Exclusive lock around structural changes (creating groups, appending traces, tables)."""
    path = lock_path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def consolidate(location: str) -> None:
    """Write consolidated metadata so ``xarray.open_datatree`` opens the store in one read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(location, zarr_format=3)
