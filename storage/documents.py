"""Channel arrays' metadata documents (``zarr.json``) kept for the length of one writing run.

A channel's array document is written once, when the array is created, and never changed
(arrays are made at their full size, :data:`storage.schema.N_DAYS` rows), so within a run
every task that opens a channel would read the same bytes again: on an object store one GET
per channel and task (each ingest batch, each event-window batch, and the consolidation at
the end), about as many requests as the run writes shards. An ingest run opens a
:class:`RunDocuments` of its store when it prepares the store (the documents it creates are
remembered as written, the others as first read) and closes it when it finalizes.

Only callers that pass a run's documents explicitly use them (the ingest's tasks); readers
outside a run read the store, so a store deleted and made again under the same name is never
read through stale documents.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from seismoflow.storage.fsio import filesystem, is_local, local_path


def _key(location: str) -> str:
    """One spelling per store: an absolute folder, or the URL as its filesystem spells it
    (``memory://x`` and ``memory:///x`` are one store)."""
    if is_local(location):
        return os.path.abspath(local_path(location))
    fs, base = filesystem(location)
    return str(fs.unstrip_protocol(base)).rstrip("/")


class RunDocuments:
    """Node path (below the store's root) -> parsed ``zarr.json`` of channel arrays."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self._guard = threading.Lock()

    def get(self, path: str) -> dict[str, Any] | None:
        with self._guard:
            return self._docs.get(path.strip("/"))

    def remember(self, documents: Mapping[str, dict[str, Any]]) -> None:
        with self._guard:
            self._docs.update({k.strip("/"): v for k, v in documents.items()})

    def __len__(self) -> int:
        with self._guard:
            return len(self._docs)


_RUNS: dict[str, RunDocuments] = {}
_RUNS_GUARD = threading.Lock()


def begin_run(location: str) -> RunDocuments:
    """Start keeping documents for a run into ``location`` (forgetting any kept before)."""
    with _RUNS_GUARD:
        docs = _RUNS[_key(location)] = RunDocuments()
        return docs


def run_documents(location: str) -> RunDocuments | None:
    """The documents of the run into ``location`` begun in this process, if any."""
    with _RUNS_GUARD:
        return _RUNS.get(_key(location))


def end_run(location: str) -> None:
    """Forget the documents of the run into ``location``."""
    with _RUNS_GUARD:
        _RUNS.pop(_key(location), None)
