"""Tasks of ``archive-batch``: the ingest functions, timed inside the task.

Each task returns a small result with ``work_s``, the seconds its own code ran, so the flow
can tell orchestration time (Prefect, Dask, serialisation) from work.

Two things here keep the per-task cost of Prefect on Dask to tens of milliseconds (it was
0.5-1.5 s per task, see BENCHMARKS.md "Archive batches on Dask"):

* :class:`Opaque` wraps a task's large arguments (a batch of channel-day units, the
  settings) so that Prefect (which walks every list, dict, dataclass and pydantic model of a
  task's arguments to find futures, on submit and again on the worker) and Dask (which
  tokenizes the arguments) pass them through whole;
* :func:`run_task_cached` runs a Prefect task run on a Dask worker with the Prefect settings
  context built once per worker process and one API client per worker thread, instead of
  rebuilding both for every task run (the flow's :class:`flows.archive_batch.BatchTaskRunner`
  submits through it). The task run itself (states, events, logs, retries) is Prefect's
  own ``run_task_sync``.

After each task's work the worker hands the C heap's free pages back to the system
(:func:`release_memory`) and reports its resident memory now and its peak so far
(:func:`memory`), so the flow can show whether a worker's memory levels off as it works
through an archive (BENCHMARKS.md, issue 5).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

from prefect import task
from prefect.cache_policies import NO_CACHE

from seismoflow.archive import ingest
from seismoflow.settings import Settings

T = TypeVar("T")


class Opaque(Generic[T]):
    """A task argument that Prefect and Dask pass through whole (``.value``).

    Prefect visits the items of lists, dicts, dataclasses and pydantic models among a task's
    arguments (to find futures) when the task is submitted and again on the worker, and Dask
    tokenizes them; for a batch of hundreds of channel-day units that cost more than the
    Prefect task run itself. An ``Opaque`` holds no futures, so neither needs to look inside.
    """

    __slots__ = ("token", "value")

    def __init__(self, value: T) -> None:
        self.value = value
        self.token = uuid4().hex

    def __dask_tokenize__(self) -> str:
        return self.token

    def __getstate__(self) -> tuple[T, str]:
        return self.value, self.token

    def __setstate__(self, state: tuple[T, str]) -> None:
        self.value, self.token = state

    def __repr__(self) -> str:  # what the Prefect UI and logs show
        size = len(self.value) if isinstance(self.value, Sequence) else None
        return f"Opaque({type(self.value).__name__}{'' if size is None else f', {size} items'})"


@dataclass(frozen=True)
class Timed:
    """A task's small result, the seconds its code ran (``work_s``), where it ran
    (``host:pid:thread``) and when its code started and ended (``time.time()``), so the flow
    can split the threads' idle time into start, between-task gaps and tail."""

    value: Any
    work_s: float
    worker: str
    start: float = 0.0
    end: float = 0.0
    rss: int = 0  # the worker process's resident bytes after the task (0: unknown)
    peak_rss: int = 0  # its highest resident bytes so far (VmHWM; 0: unknown)


def _where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def memory(status: str = "/proc/self/status") -> tuple[int, int]:
    """This process's resident bytes now and its peak so far (``VmRSS``, ``VmHWM`` of
    ``/proc/self/status``); ``(0, 0)`` where there is no such file (not Linux)."""
    found = {}
    try:
        with open(status) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return 0, 0
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


_trim: Any = None  # glibc's malloc_trim, looked up once; False where there is none


def release_memory() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``); ``False``
    where there is no glibc (macOS, Windows, musl).

    A batch's arrays (a day of samples, decoded records) are freed when it ends, but glibc
    keeps freed heap memory for reuse: the archive's batches in one process without the
    Dask nanny's ``MALLOC_TRIM_THRESHOLD_=65536`` ended at 313 MB resident, 29 MB of it
    free heap, against 287 MB with this call after each batch (BENCHMARKS.md, issue 5).
    Workers started by a nanny trim most of it themselves; this covers the others
    (``--no-nanny``, other launchers). Takes a few milliseconds."""
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _trim = libc.malloc_trim
                _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                _trim = False
    if _trim is False:
        return False
    _trim(0)
    return True


def _timed(fn: Any, *args: Any) -> Timed:
    start, clock = time.time(), time.perf_counter()
    value = fn(*args)
    work = time.perf_counter() - clock
    release_memory()  # after the timing: it is the worker's cost, not the task's work
    rss, peak = memory()
    where = f"{_where()}:{threading.get_ident()}"
    return Timed(value, work, where, start, start + work, rss, peak)


@task(name="ingest-station-days", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def ingest_station_days(
    location: str, units: Opaque[Sequence[ingest.ChannelDayUnit]], settings: Opaque[Settings]
) -> Timed:
    """Ingest a batch of station-days; the value is one small row per channel-day."""
    return _timed(ingest.ingest_batch, location, units.value, settings.value)


@task(name="cut-event-windows", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def cut_windows(location: str, indices: Opaque[Sequence[int]], settings: Opaque[Settings]) -> Timed:
    """Cut a chunk of event-window traces; the value is a few counts."""
    return _timed(ingest.cut_batch, location, indices.value, settings.value)


@task(name="worker-ready", cache_policy=NO_CACHE)
def ready(seconds: float) -> str:
    """A no-op that holds its worker thread for ``seconds`` (so each thread gets one)."""
    time.sleep(seconds)
    return _where()


def warm() -> float:
    """Import what the tasks need (run once per Dask worker before timing starts); seconds."""
    clock = time.perf_counter()
    import prefect.task_engine  # noqa: F401
    import seismoflow.storage.continuous  # noqa: F401
    import seismoflow.storage.events  # noqa: F401
    import seismoflow.tasks.ingest  # noqa: F401

    from seismoflow.archive import assemble, windows  # noqa: F401

    return time.perf_counter() - clock


# Worker side of BatchTaskRunner: per process, the Prefect settings contexts by key; per
# thread, an open API client per settings key.
_settings_lock = threading.Lock()
_settings_contexts: dict[str, Any] = {}
_thread = threading.local()


def run_task_cached(
    task: Any,
    task_run_id: UUID,
    parameters: dict[str, Any],
    dependencies: dict[str, set[Any]],
    context: dict[str, Any],
    settings_key: str,
    settings_context: dict[str, Any],
) -> Any:
    """Run one Prefect task run on this Dask worker thread (Prefect's ``run_task_sync``;
    returns its final state) in the flow's settings, with the settings context and the
    thread's API client made once rather than for every task run.

    ``context`` is ``prefect.context.serialize_context()`` of the flow without its
    ``settings_context``, which comes apart as ``settings_context`` (used the first time
    this process sees ``settings_key``)."""
    from prefect.context import SettingsContext, SyncClientContext
    from prefect.task_engine import run_task_sync

    with _settings_lock:
        base = _settings_contexts.get(settings_key)
        if base is None:
            base = _settings_contexts[settings_key] = SettingsContext(**settings_context)
    with base.model_copy():
        clients: dict[str, Any] = getattr(_thread, "clients", {})
        client_ctx = clients.get(settings_key)
        if client_ctx is None:
            client_ctx = SyncClientContext()
            client_ctx.__enter__()  # opens the client; kept open for the thread's life
            _thread.clients = {**clients, settings_key: client_ctx}
        token = SyncClientContext.__var__.set(client_ctx)
        try:
            return run_task_sync(
                task,
                task_run_id=task_run_id,
                parameters=parameters,
                return_type="state",
                dependencies=dependencies,
                context=context,
            )
        finally:
            SyncClientContext.__var__.reset(token)
