"""Opening a store at a path or any fsspec URL, and the lock for structural changes."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zarr
from seismoflow.storage.documents import RunDocuments
from seismoflow.storage.fsio import (
    filesystem,
    read_bytes,
    read_many,
    storage_options,
    write_bytes,
)
from seismoflow.storage.objectlock import ObjectLock
from seismoflow.storage.schema import SCHEMA_VERSION

from seismoflow.errors import StoreError


def is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def node_location(location: str, path: str) -> str:
    """The location of the group at ``path`` inside the store, opened as a store of its own.

    Readers open tables and datasets this way: zarr then reads that group's documents only,
    not the root's, which holds the consolidated metadata of the whole store (~10 MB for
    the shared archive; parsing it cost ~1 s per open).
    """
    return f"{location.rstrip('/')}/{path.strip('/')}"


def check_schema(location: str, root: zarr.Group) -> None:
    """A :class:`StoreError` naming ``seismoflow migrate`` for a store of an older schema."""
    version = int(str(root.attrs.get("seismoflow_schema", SCHEMA_VERSION)))
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"{location} is a seismoflow store of schema {version}; this version reads "
            f"schema {SCHEMA_VERSION}: run `seismoflow migrate --store {location}` once"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{location} was written by a newer seismoflow (schema {version}); upgrade "
            "seismoflow to read it"
        )


def open_root(location: str, mode: str = "a", *, any_schema: bool = False) -> zarr.Group:
    """Open (or create, with ``mode='a'``) the store's root group.

    Reads never go through consolidated metadata here: writers must see every node. A
    writer (``mode='a'``) first drops the root's consolidated metadata (:func:`unconsolidate`),
    which ``finalize`` writes again when the run ends.
    """
    options = storage_options(location) or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if mode == "r":
            root = zarr.open_group(
                location, mode="r", zarr_format=3, use_consolidated=False, storage_options=options
            )
        else:
            try:
                unconsolidate(location)
                root = zarr.open_group(
                    location, mode="a", zarr_format=3, use_consolidated=False,
                    storage_options=options,
                )  # fmt: skip
            except (FileNotFoundError, PermissionError) as exc:
                if is_local(location):
                    raise
                raise StoreError(
                    f"cannot write the store {location}: {exc}; check that its bucket exists "
                    "(create it first) and that these credentials may write in it"
                ) from exc
            if "seismoflow_schema" not in root.attrs:
                root.attrs.update(
                    {"seismoflow_schema": SCHEMA_VERSION, "title": "seismoflow store"}
                )
        if not any_schema:
            check_schema(location, root)
        return root


def store_exists(location: str) -> bool:
    try:
        root = open_root(location, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return "seismoflow_schema" in root.attrs


def require_store(location: str, then: str) -> None:
    """A :class:`StoreError` unless a seismoflow store is at ``location``; ``then`` says
    what to do (the command that makes one, or the option to check)."""
    if not store_exists(location):
        raise StoreError(f"no seismoflow store at {location}; {then}")


MISSING, PARTIAL, UNFINISHED, FINAL = "missing", "partial", "unfinished", "final"


def store_state(location: str) -> str:
    """What is at ``location``, read without zarr so a half-written store cannot fail it.

    ``missing``: nothing there. ``partial``: files, but no root group yet (a run stopped
    before it created the store's structure, e.g. a kill early in a fetch or ingest).
    ``unfinished``: a store whose last writing run has not finalized it (still running,
    or stopped). ``final``: finalized by the run that last wrote it.
    """
    if is_local(location):
        base = local_path(location)
        if not base.is_dir() or not any(base.iterdir()):
            return MISSING
    try:
        raw = read_bytes(location, "zarr.json")
        doc = {} if raw is None else dict(json.loads(raw))
    except (OSError, ValueError):
        doc = {}
    if "seismoflow_schema" not in doc.get("attributes", {}):
        return PARTIAL if is_local(location) else MISSING
    return FINAL if "consolidated_metadata" in doc else UNFINISHED


def lock_path(location: str) -> Path:
    """Lock file beside a local store; for URLs other than ``s3://`` (which lock with an
    object in the store, :mod:`seismoflow.storage.objectlock`) a per-URL file in the user
    cache, which excludes writers on this machine only.

    ``flock`` locks are released by the kernel when the holder dies, so a killed run never
    leaves a stale lock behind.
    """
    if is_local(location):
        path = local_path(location)
        return path.parent / f".{path.name}.lock"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seismoflow"
    return cache / f"{hashlib.sha256(location.encode()).hexdigest()[:24]}.lock"


OBJECT_LOCK_PROTOCOLS = ("s3://", "s3a://")

_HELD = threading.local()
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def store_lock(location: str) -> Iterator[None]:
    """Exclusive lock around structural changes (creating groups, appending traces, tables).

    Local paths: ``flock`` on a file beside the store. ``s3://`` stores: a lock object in
    the store, held with a lease that a heartbeat renews (:class:`ObjectLock`), so writers
    on different machines exclude each other. Re-entrant within a thread: a holder that
    opens the store again is not blocked by its own lock (other threads and processes are).
    """
    if location.startswith(OBJECT_LOCK_PROTOCOLS):
        with _object_lock(location):
            yield
        return
    path = lock_path(location)
    held: dict[Path, int] = _HELD.__dict__.setdefault("paths", {})
    if held.get(path):
        held[path] += 1
        try:
            yield
        finally:
            held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        held[path] = 1
        try:
            yield
        finally:
            held[path] = 0
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _object_lock(location: str) -> Iterator[None]:
    """The store's lock object, taken by one thread of this process at a time (the others
    wait on a thread lock, not on the store); re-entrant within the holding thread."""
    key = location.rstrip("/")
    with _PROCESS_LOCKS_GUARD:
        local = _PROCESS_LOCKS.setdefault(key, threading.RLock())
    depth: dict[str, int] = _HELD.__dict__.setdefault("objects", {})
    with local:
        if depth.get(key):
            depth[key] += 1
            try:
                yield
            finally:
                depth[key] -= 1
            return
        lock = ObjectLock(key)
        lock.acquire()
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0
            lock.release()


def consolidate(location: str, documents: RunDocuments | None = None) -> None:
    """Write consolidated metadata so ``xarray.open_datatree`` opens the store in one read.

    The documents are gathered straight from the store, and the root document written is
    the one zarr's ``consolidate_metadata`` writes (tested), as compact JSON: zarr walks the
    hierarchy node by node through its event loop, ~1 ms per node on a local folder and a
    request or two per node, one after another, on an object store, and a store holds
    ~15 nodes per channel. A local folder is walked; an object store is listed (one request
    per 1,000 objects) and its documents read concurrently, except those a run's
    ``documents`` already hold (channel arrays' documents, never changed once written).
    """
    nodes = _local_nodes(location) if is_local(location) else _listed_nodes(location, documents)
    raw = read_bytes(location, "zarr.json")
    if raw is None:
        raise FileNotFoundError(f"{location}: no root group to consolidate")
    root = dict(json.loads(raw))
    root["consolidated_metadata"] = {
        **_EMPTY_CONSOLIDATED,
        "metadata": {k: nodes[k] for k in sorted(nodes, key=lambda k: (k.count("/"), k))},
    }
    write_bytes(location, "zarr.json", _compact(root))


def _node_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A node's document as consolidated metadata holds it."""
    if doc.get("node_type") == "group":
        return {**doc, "consolidated_metadata": dict(_EMPTY_CONSOLIDATED)}
    return doc


def _local_nodes(location: str) -> dict[str, dict[str, Any]]:
    """Every node below the root of a local store: path -> document."""
    base = local_path(location)
    nodes: dict[str, dict[str, Any]] = {}
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, base).replace(os.sep, "/")
        if "zarr.json" not in files:  # not a node, nor is anything below it
            dirs[:] = []
            continue
        if rel == ".":
            continue
        with open(os.path.join(folder, "zarr.json"), "rb") as fh:
            doc = json.loads(fh.read())
        if doc.get("node_type") != "group":
            dirs[:] = []  # an array's folders hold its chunks
        nodes[rel] = _node_document(doc)
    return nodes


def _listed_nodes(
    location: str, documents: RunDocuments | None = None
) -> dict[str, dict[str, Any]]:
    """Every node below the root of a store at a URL, as :func:`_local_nodes` finds them:
    a folder is a node if it holds a ``zarr.json`` and every folder above it is a group."""
    fs, base = filesystem(location)
    prefix = base.rstrip("/") + "/"
    folders = []
    for path in fs.find(base, detail=False):
        rel = str(path).split("://", 1)[-1].removeprefix(prefix)
        folder, _, name = rel.rpartition("/")
        if name == "zarr.json" and folder and not any(p.startswith(".") for p in folder.split("/")):
            folders.append(folder)
    known = {f: documents.get(f) for f in folders} if documents is not None else {}
    unknown = [f for f in folders if known.get(f) is None]
    docs: dict[str, Any] = dict(
        zip(unknown, read_many(location, [f"{f}/zarr.json" for f in unknown]), strict=True)
    )
    docs.update({f: doc for f, doc in known.items() if doc is not None})
    nodes: dict[str, dict[str, Any]] = {}
    groups = {""}
    for folder in sorted(folders, key=lambda f: (f.count("/"), f)):
        raw = docs[folder]
        if raw is None or folder.rpartition("/")[0] not in groups:
            continue  # gone since the listing, or below an array or a non-node
        doc = copy.deepcopy(raw) if isinstance(raw, dict) else json.loads(raw)
        if doc.get("node_type") == "group":
            groups.add(folder)
        nodes[folder] = _node_document(doc)
    return nodes


_EMPTY_CONSOLIDATED: dict[str, Any] = {"kind": "inline", "must_understand": False, "metadata": {}}


def _compact(doc: dict[str, Any]) -> bytes:
    """A document as compact JSON: half the bytes of zarr's indented form."""
    return json.dumps(doc, separators=(",", ":")).encode()


def unconsolidate(location: str) -> None:
    """Drop the root's consolidated metadata before a run writes into the store.

    It would be stale once the run adds nodes, and zarr reads the whole root document
    (megabytes for a store of many channels) whenever it touches a node's parents,
    which made every table and array creation cost ~1 s. ``finalize`` consolidates again.
    Read and written straight through the store, before zarr opens (and parses) the root.
    """
    raw = read_bytes(location, "zarr.json")
    if raw is None or b'"consolidated_metadata"' not in raw:
        return
    with store_lock(location):
        raw = read_bytes(location, "zarr.json")
        doc = {} if raw is None else dict(json.loads(raw))
        if doc.pop("consolidated_metadata", None) is not None:
            write_bytes(location, "zarr.json", _compact(doc))
