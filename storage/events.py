"""Writes of window traces (``events/``, ``noise/``; layout in :mod:`storage.schema`).

A trace's waveform is one chunk of its group's ``waveform``, written through zarr. The
chunks sit in shards of ``WINDOW_TRACES_PER_SHARD`` traces (groups made before that have one
object per trace, written one by one): a batch's traces are kept in memory and written when
the batch ends, each shard's once, under the store lock, since a shard's other traces may be
another writer's (zarr reads the stored shard and writes it back whole). Which traces are
written, and their quality flags, is the window ledger ``tables/windows`` (one row per
written trace, appended once per batch, after the traces): a run killed mid-batch leaves
the traces it had not recorded there to the next run. When a run finalizes the store, the
ledger is copied into each group's ``flags`` and ``written_at`` for readers of the arrays.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import zarr
from seismoflow.storage.location import store_lock
from seismoflow.storage.schema import EVENTS, NOISE_GROUP, check_trace_region
from seismoflow.storage.tables import append_rows, read_table

from seismoflow.times import NAT

WINDOW_LEDGER = "windows"
WINDOW_GROUPS = (EVENTS, NOISE_GROUP)


def _array(group: zarr.Group, name: str) -> zarr.Array:
    arr = group[name]
    assert isinstance(arr, zarr.Array)
    return arr


def events_group(root: zarr.Group) -> zarr.Group:
    group = root[EVENTS]
    assert isinstance(group, zarr.Group)
    return group


def group_name(group: zarr.Group) -> str:
    return group.path.strip("/").rsplit("/", 1)[-1]


def trace_keys(group: zarr.Group) -> dict[str, int]:
    """Existing ``trace_key`` -> trace index."""
    keys = _array(group, "trace_key")[:]
    return {str(k): i for i, k in enumerate(np.asarray(keys).tolist())}


def window_ledger(location: str, name: str) -> pd.DataFrame:
    """The ledger rows of window group ``name``: trace, trace_key, flags, written_at_ns."""
    table = read_table(location, WINDOW_LEDGER)
    if table.empty or "group" not in table:
        return pd.DataFrame(columns=["group", "trace", "trace_key", "flags", "written_at_ns"])
    return table[table["group"] == name].reset_index(drop=True)


def written_traces(location: str, group: zarr.Group) -> dict[int, tuple[int, int]]:
    """``trace index -> (flags, written_at_ns)`` of the group's written traces; a row
    whose key no longer matches the trace at that index does not count."""
    ledger = window_ledger(location, group_name(group))
    if ledger.empty:
        return {}
    keys = np.asarray(_array(group, "trace_key")[:]).tolist()
    out = {}
    for trace, key, flags, done in zip(
        ledger["trace"], ledger["trace_key"], ledger["flags"], ledger["written_at_ns"],
        strict=True,
    ):
        t = int(trace)
        if 0 <= t < len(keys) and str(keys[t]) == str(key) and int(done) != NAT:
            out[t] = (int(flags), int(done))
    return out


def pending_traces(location: str, group: zarr.Group) -> list[int]:
    """Trace indices whose waveform is not yet written (no ledger row)."""
    n = int(_array(group, "trace_key").shape[0])
    done = written_traces(location, group)
    return [i for i in range(n) if i not in done]


class TraceWriter:
    """Writes window traces, one whole chunk each; :meth:`flush` writes the traces of a
    sharded group and appends the ledger rows (call it once the batch is cut, also when it
    stopped early). :meth:`write` may be called from several threads at once."""

    def __init__(self, group: zarr.Group, threads: int = 1) -> None:
        self.group = group
        self.threads = max(1, int(threads))  # shards :meth:`flush` writes at once
        self.name = group_name(group)
        self._wave = _array(group, "waveform")
        self._keys: list[Any] | None = None
        self.rows: list[dict[str, Any]] = []
        self._guard = threading.Lock()
        shards = self._wave.shards
        self._per_shard = int(shards[0]) if shards is not None else 0
        self._blocks: dict[int, np.ndarray] = {}  # traces of a sharded group, not yet written

    def write(self, index: int, block: np.ndarray, flags: int) -> None:
        check_trace_region(self._wave, index, block)
        if not self._per_shard:
            self._wave[index] = block
        with self._guard:
            if self._per_shard:
                self._blocks[index] = block
            if self._keys is None or index >= len(self._keys):
                self._keys = np.asarray(_array(self.group, "trace_key")[:]).tolist()
            self.rows.append(
                {
                    "group": self.name,
                    "trace": int(index),
                    "trace_key": str(self._keys[index]),
                    "flags": int(flags),
                    "written_at_ns": time.time_ns(),
                }
            )

    def flush(self, location: str) -> None:
        """Write the kept traces (sharded groups; ``threads`` shards at once), then append
        the ledger rows of the traces written; a write that fails raises, and the traces it
        did not write get no row (a re-run writes them)."""
        with self._guard:
            blocks, self._blocks = self._blocks, {}
            rows, self.rows = self.rows, []
        unwritten = set(blocks)

        def write(run: tuple[int, int]) -> None:
            a, b = run
            self._wave[a:b] = np.stack([blocks[i] for i in range(a, b)])
            with self._guard:
                unwritten.difference_update(range(a, b))

        try:
            if blocks:
                runs = self._runs(sorted(blocks))
                with store_lock(location):
                    if self.threads == 1 or len(runs) == 1:
                        for run in runs:
                            write(run)
                    else:  # each run is its own shard: the writes never overlap
                        with ThreadPoolExecutor(min(self.threads, len(runs))) as pool:
                            for future in [pool.submit(write, run) for run in runs]:
                                future.result()
        finally:
            done = [r for r in rows if r["trace"] not in unwritten]
            if done:
                append_rows(location, WINDOW_LEDGER, pd.DataFrame(done))

    def _runs(self, indices: list[int]) -> list[tuple[int, int]]:
        """``indices`` (sorted) as ``[a, b)`` runs of consecutive traces within one shard:
        one zarr write, one read and one write of the shard, each."""
        runs: list[tuple[int, int]] = []
        for i in indices:
            if runs and runs[-1][1] == i and i % self._per_shard:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
        return runs


def materialize_window_ledger(location: str, root: zarr.Group) -> None:
    """Copy the window ledger into each window group's ``flags`` and ``written_at`` (call
    under the store lock, when a run finalizes the store)."""
    for name in WINDOW_GROUPS:
        group = root.get(name, None)
        if not isinstance(group, zarr.Group) or "trace_key" not in group:
            continue
        n = int(_array(group, "trace_key").shape[0])
        flags = np.zeros(n, dtype=np.uint32)
        written = np.full(n, NAT, dtype=np.int64)
        for t, (f, done) in written_traces(location, group).items():
            flags[t] = f
            written[t] = done
        for arr_name, values in (("flags", flags), ("written_at", written)):
            arr = _array(group, arr_name)
            if arr.shape[0] != n:
                arr.resize((n,))
            if n:
                arr[:] = values
