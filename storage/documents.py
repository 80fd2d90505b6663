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

On an object store a run also keeps the shards it writes of the days its event windows may
read (:meth:`RunDocuments.keep_shard`, up to :data:`RUN_SHARD_BYTES`): the window cuts read
those days back right after the continuous stage wrote them, one GET per shard. A kept shard
is tagged with its ledger record's completion time (``ingested_at_ns``) and used only for a
record with the same time, so a shard rewritten since, by this run or another writer, is
read from the store.

A run also keeps the window specs it appends (:meth:`RunDocuments.keep_specs`), by trace
index: its window cuts would otherwise read every coordinate array of the window group
back, per batch, to learn what they were just told. Traces the run did not append (left
pending by an interrupted run) are read from the store.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from seismoflow.storage.fsio import filesystem, is_local, local_path


def _key(location: str) -> str:
    """One spelling per store: an absolute folder, or the URL as its filesystem spells it
    (``memory://x`` and ``memory:///x`` are one store)."""
    if is_local(location):
        return os.path.abspath(local_path(location))
    fs, base = filesystem(location)
    return str(fs.unstrip_protocol(base)).rstrip("/")


# Bytes of shards a run keeps for its window cuts (the oldest kept go first beyond it): the
# shared archive's 2,517 channel-days take 49 MB of shards.
RUN_SHARD_BYTES = 128 << 20


class RunDocuments:
    """Node path (below the store's root) -> parsed ``zarr.json`` of channel arrays; and the
    shards the run wrote of days its windows may read."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self._guard = threading.Lock()
        self._window_days: frozenset[int] = frozenset()
        self._shards: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._shard_bytes = 0
        self._specs: dict[tuple[str, int], Any] = {}

    def get(self, path: str) -> dict[str, Any] | None:
        with self._guard:
            return self._docs.get(path.strip("/"))

    def remember(self, documents: Mapping[str, dict[str, Any]]) -> None:
        with self._guard:
            self._docs.update({k.strip("/"): v for k, v in documents.items()})

    def __len__(self) -> int:
        with self._guard:
            return len(self._docs)

    def keep_window_days(self, days_ns: Iterable[int]) -> None:
        """The days (UTC midnights, ns) whose shards :meth:`keep_shard` keeps."""
        with self._guard:
            self._window_days = frozenset(int(d) for d in days_ns)

    def keep_shard(self, path: str, day_ns: int, ingested_at_ns: int, raw: bytes) -> None:
        """Keep the shard ``raw`` just written at ``path`` (object key below the store's
        root) for day ``day_ns``, whose ledger record has completion time
        ``ingested_at_ns``, if the day is one the run's windows may read."""
        if int(day_ns) not in self._window_days or len(raw) > RUN_SHARD_BYTES:
            return
        key = path.strip("/")
        with self._guard:
            old = self._shards.pop(key, None)
            if old is not None:
                self._shard_bytes -= len(old[1])
            self._shards[key] = (int(ingested_at_ns), raw)
            self._shard_bytes += len(raw)
            while self._shard_bytes > RUN_SHARD_BYTES:
                _, (_, dropped) = self._shards.popitem(last=False)
                self._shard_bytes -= len(dropped)

    def shard(self, path: str, ingested_at_ns: int) -> bytes | None:
        """The shard kept at ``path`` if it is the one of the record completed at
        ``ingested_at_ns`` (else ``None``: read the store)."""
        with self._guard:
            kept = self._shards.get(path.strip("/"))
        return kept[1] if kept is not None and kept[0] == int(ingested_at_ns) else None

    def keep_specs(self, group: str, specs: Mapping[int, Any]) -> None:
        """Keep the specs the run appended to window group ``group``, by trace index."""
        with self._guard:
            self._specs.update({(group, int(i)): spec for i, spec in specs.items()})

    def specs(self, group: str, indices: Iterable[int]) -> list[Any] | None:
        """The kept specs of ``indices`` in ``group``, in order; ``None`` unless every
        one is kept."""
        with self._guard:
            found = [self._specs.get((group, int(i))) for i in indices]
        return None if any(f is None for f in found) else found


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
