"""Region writes of event-window traces (layout in :mod:`storage.schema`)."""

from __future__ import annotations

import time

import numpy as np
import zarr

from seismoflow.times import NAT
from storage.schema import EVENTS, check_trace_region


def _array(group: zarr.Group, name: str) -> zarr.Array:
    arr = group[name]
    assert isinstance(arr, zarr.Array)
    return arr


def events_group(root: zarr.Group) -> zarr.Group:
    group = root[EVENTS]
    assert isinstance(group, zarr.Group)
    return group


def trace_keys(group: zarr.Group) -> dict[str, int]:
    """Existing ``trace_key`` -> trace index."""
    keys = _array(group, "trace_key")[:]
    return {str(k): i for i, k in enumerate(np.asarray(keys).tolist())}


def pending_traces(group: zarr.Group) -> list[int]:
    """Trace indices whose waveform is not yet written (ledger says NaT)."""
    written = np.asarray(_array(group, "written_at")[:])
    return np.flatnonzero(written == NAT).tolist()


def write_trace(group: zarr.Group, index: int, block: np.ndarray, flags: int) -> None:
    """Write one trace's waveform (one whole chunk) and mark it done in the ledger."""
    check_trace_region(group, index, block)
    _array(group, "written_at")[index] = NAT
    _array(group, "waveform")[index] = block
    _array(group, "flags")[index] = int(flags)
    _array(group, "written_at")[index] = time.time_ns()
