"""Tasks of ``archive-batch``: the ingest functions, timed inside the task.

Each task returns its result with ``work_s``, the seconds its own code ran, so the flow can
tell orchestration time (Prefect, Dask, serialisation) from work.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from seismoflow import ingest
from seismoflow.settings import Settings


@dataclass(frozen=True)
class Timed:
    """A task's result, the seconds its code ran, and where it ran (``host:pid``)."""

    value: Any
    work_s: float
    worker: str


def _where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@task(name="ingest-station-days", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def ingest_station_days(
    location: str, units: Sequence[ingest.ChannelDayUnit], settings: Settings
) -> Timed:
    clock = time.perf_counter()
    results = ingest.ingest_batch(location, units, settings)
    return Timed(results, time.perf_counter() - clock, _where())


@task(name="cut-event-windows", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def cut_windows(location: str, indices: Sequence[int], settings: Settings) -> Timed:
    clock = time.perf_counter()
    counts = ingest.cut_batch(location, indices, settings)
    return Timed(counts, time.perf_counter() - clock, _where())


@task(name="worker-ready", cache_policy=NO_CACHE)
def ready(seconds: float) -> str:
    """A no-op that holds its worker thread for ``seconds`` (so each thread gets one)."""
    time.sleep(seconds)
    return _where()


def warm() -> float:
    """Import what the tasks need (run once per Dask worker before timing starts); seconds."""
    clock = time.perf_counter()
    import prefect.task_engine  # noqa: F401

    import storage.continuous  # noqa: F401
    import storage.events  # noqa: F401
    import tasks.ingest  # noqa: F401
    from seismoflow.archive import assemble, windows  # noqa: F401

    return time.perf_counter() - clock
