"""``archive-batch``: a large archive ingested on a Dask cluster, in bounded batches.

The same plan, tasks and store as ``ingest-archive`` (the stores are identical), run on
Prefect's ``DaskTaskRunner``: a LocalCluster by default, or an existing scheduler
(``--dask-address tcp://host:8786``: an HPC or Kubernetes cluster, see docs/scale-out.md).
Work units are whole station-days packed into batches (at most ``archive_station_days`` and
``batch_bytes``), largest first and smaller towards the end so the threads finish together
(``seismoflow.scaleout.station_day_batches``); at most ``archive_in_flight`` batches are
submitted at once and each result (one small row per channel-day) is folded into counts and
written to the store's tables as it arrives, so neither the workers nor the flow ever hold
more than a few batches, however large the archive. ``BatchTaskRunner`` keeps Prefect's cost
per task run to tens of milliseconds (docs/scale-out.md, "Per-task cost").
"""

from __future__ import annotations

import hashlib
import json
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from uuid import UUID, uuid4

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import AssetContext, FlowRunContext, serialize_context
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.tasks import Task
from prefect.utilities.engine import collect_task_run_inputs_sync
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture
from seismoflow.tasks import batch as b
from seismoflow.tasks import ingest as t

from seismoflow.archive.ingest import ChannelDayUnit, UnitResult, plan_summary, summarize_units
from seismoflow.errors import BadInputError
from seismoflow.scaleout import (
    Coverage,
    Overhead,
    WorkerMemory,
    add_counts,
    batch_failed,
    count_station_days,
    idle_split,
    station_day_batches,
    window_chunks,
)
from seismoflow.settings import Settings

T = TypeVar("T")

# Unit rows gathered before they are merged into the store's tables: the table is
# rewritten whole on each merge, so fewer, larger merges; still bounded memory.
RECORD_ROWS = 5000
PROGRESS_EVERY_S = 5.0  # an API call each; at most every few seconds


def cluster_threads(timeout_s: float = 120.0) -> tuple[int, list[str]]:
    """Worker threads and worker addresses of the flow's task runner (Dask or threads)."""
    ctx = FlowRunContext.get()
    runner = ctx.task_runner if ctx else None
    if isinstance(runner, DaskTaskRunner):
        client = runner.client
        try:
            client.wait_for_workers(1, timeout=timeout_s)
        except TimeoutError as exc:
            where = runner.address or "the LocalCluster"
            raise BadInputError(
                f"no Dask worker joined scheduler {where} within {timeout_s:.0f} s; "
                f"start some with `dask worker {where}`"
            ) from exc
        client.run(b.warm)  # imports once per worker, outside the timed phases
        nthreads = client.nthreads()
        return sum(nthreads.values()), sorted(nthreads)
    return int(getattr(runner, "_max_workers", None) or 1), ["local-threads"]


def bounded_map(
    items: Iterator[T],
    submit: Callable[[T], PrefectFuture[b.Timed]],
    limit: int,
    on_result: Callable[[T, b.Timed], None],
    on_failure: Callable[[T, BaseException], None],
    threads: int,
) -> Overhead:
    """Submit ``items`` with at most ``limit`` in flight; ``on_result(item, result)`` each
    as it finishes, or ``on_failure(item, error)`` for a task that failed after its retries
    (a lost worker, say): the run goes on. The next item is submitted before a result is
    folded in, so the workers' queues never wait on the flow. A finished future is dropped
    at once, so its result leaves the worker. Returns the phase's wall, work and where the
    threads' idle time went (:func:`seismoflow.scaleout.idle_split`).
    """
    done: queue.Queue[tuple[T, PrefectFuture[b.Timed]]] = queue.Queue()
    running = 0
    work = 0.0
    tasks = 0
    spans: list[tuple[str, float, float]] = []
    clock, wall_start = time.perf_counter(), time.time()

    def fill() -> int:
        n = 0
        while running + n < limit:
            item = next(items, None)
            if item is None:
                break
            fut = submit(item)
            fut.wrapped_future.add_done_callback(  # type: ignore[attr-defined]
                lambda _, f=fut, i=item: done.put((i, f))
            )
            n += 1
        return n

    running += fill()
    while running:
        item, fut = done.get()
        running -= 1
        tasks += 1
        running += fill()
        try:
            timed = fut.result()
        except Exception as exc:  # noqa: BLE001 - quarantine the item, keep going
            on_failure(item, exc)
        else:
            work += timed.work_s
            spans.append((timed.worker, timed.start, timed.end))
            on_result(item, timed)
        del fut, item
    wall = time.perf_counter() - clock
    idle = idle_split(wall_start, wall_start + wall, spans, threads)
    return Overhead(wall, work, threads, tasks, idle)


class _Progress:
    """The run's progress artifact (percent), updated at most once per ``PROGRESS_EVERY_S``.

    A phase spans ``[start, end)`` percent and advances by its items (station-days, then
    event-window traces)."""

    def __init__(self) -> None:
        self.start, self.end, self.total, self.done, self.last = 0.0, 100.0, 1, 0, 0.0
        self.id: UUID = create_progress_artifact(  # type: ignore[assignment]
            0.0, key="archive-batch-progress", description="station-days, then event windows"
        )

    def phase(self, start: float, end: float, total: int) -> None:
        self.start, self.end, self.total, self.done = start, end, max(total, 1), 0
        self.advance(0)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S or self.done >= self.total:
            self.last = now
            share = min(1.0, self.done / self.total)
            update_progress_artifact(self.id, self.start + (self.end - self.start) * share)


@flow(name="archive-batch", log_prints=True)
def archive_batch(
    sds: str,
    stations: str | None = None,
    events: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ingest an archive on the flow's Dask cluster; returns the summary (as ``ingest``'s,
    plus ``station_days``, ``batches`` and ``orchestration``: wall, work and overhead)."""
    s = Settings(**(settings or {}))
    logger = get_run_logger()
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    threads, workers = cluster_threads()
    limit = s.archive_in_flight or 2 * threads
    # A worker's first Prefect task run pays once for its API client and event threads
    # (seconds on a busy machine): paid here, outside the timed phases.
    for fut in [b.ready.submit(0.5) for _ in range(threads)]:
        fut.result()
    timings["warmup"] = time.perf_counter() - clock
    clock = time.perf_counter()

    plan = t.open_archive(s, sds, stations, events, start_ns, end_ns)
    timings["plan"] = time.perf_counter() - clock
    n_days = count_station_days(plan.units)
    planned = plan_summary(plan)
    logger.info(
        "plan: %d files, %d channel-days, %d events; %d station-days on %d Dask threads (at "
        "most %d station-days and %d bytes per batch, largest first; %d batches in flight) "
        "(%.1f s)", planned["files"], planned["units"], planned["events"], n_days, threads,
        s.archive_station_days, s.batch_bytes, limit, timings["plan"],
    )  # fmt: skip

    progress = _Progress()
    progress.phase(0.0, 90.0 if events else 100.0, n_days)
    counts: dict[str, Any] = {}
    coverage = Coverage()
    pending: list[UnitResult] = []
    ran_on: Counter[str] = Counter()
    memory = WorkerMemory()
    windows: dict[str, int] = {}

    def flush() -> None:
        t.record_continuous(s.store, pending)
        pending.clear()

    def station_days_done(batch: list[ChannelDayUnit], timed: b.Timed) -> None:
        results: list[UnitResult] = timed.value
        ran_on[timed.worker.rsplit(":", 1)[0]] += 1  # host:pid
        memory.add(timed, len(batch))
        add_counts(counts, summarize_units(results))
        coverage.add(results)
        pending.extend(results)
        if len(pending) >= RECORD_ROWS:
            flush()
        progress.advance(count_station_days(batch))

    def station_days_failed(batch: list[ChannelDayUnit], exc: BaseException) -> None:
        t.record_problems(s.store, batch_failed(batch, exc), "ingest")
        n = len(batch)
        add_counts(counts, {"units": n, "units_failed": n, "quarantined": n})
        progress.advance(count_station_days(batch))

    def windows_done(chunk: list[int], timed: b.Timed) -> None:
        add_counts(windows, timed.value)
        memory.add(timed, len(chunk))
        progress.advance(len(chunk))

    def windows_failed(chunk: list[int], exc: BaseException) -> None:
        logger.error("event windows %d..%d failed: %s; a re-run retries them", chunk[0],
                     chunk[-1], exc)  # fmt: skip
        add_counts(windows, {"failed": len(chunk)})
        progress.advance(len(chunk))

    clock = time.perf_counter()
    opaque_settings = b.Opaque(s)
    batches = station_day_batches(plan.units, s.archive_station_days, s.batch_bytes, threads)
    phases = {
        "continuous": bounded_map(
            batches,
            lambda batch: b.ingest_station_days.submit(s.store, b.Opaque(batch), opaque_settings),
            limit,
            station_days_done,
            station_days_failed,
            threads,
        )
    }
    flush()
    timings["continuous"] = time.perf_counter() - clock
    summary: dict[str, Any] = {**plan_summary(plan), **counts}
    summary.setdefault("quarantined", 0)
    summary["quarantined"] += len(plan.problems)
    summary["station_days"] = n_days
    summary["batches"] = phases["continuous"].tasks
    summary["station_days_per_batch"] = s.archive_station_days  # at most

    if events:
        clock = time.perf_counter()
        todo = t.prepare_windows(s.store, s)
        progress.phase(90.0, 100.0, len(todo))
        phases["windows"] = bounded_map(
            window_chunks(todo, s.window_batch, threads),
            lambda chunk: b.cut_windows.submit(s.store, b.Opaque(chunk), opaque_settings),
            limit,
            windows_done,
            windows_failed,
            threads,
        )
        timings["windows"] = time.perf_counter() - clock
    summary["windows"] = windows
    t.finalize(s.store)
    update_progress_artifact(progress.id, 100.0)
    summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    summary["orchestration"] = {name: o.as_dict() for name, o in phases.items()}
    summary["dask_workers"] = workers
    summary["task_workers"] = dict(sorted(ran_on.items()))
    summary["worker_memory"] = memory.as_dict()
    summary["flow_run_id"] = str(flow_run.id)
    _publish(summary, coverage.rows())
    logger.info(
        "archive batch: %d channel-days written, %d skipped, %d failed; %d samples; %d "
        "quarantined; seconds %s",
        summary.get("units_written", 0), summary.get("units_skipped", 0),
        summary.get("units_failed", 0), summary.get("samples_written", 0),
        summary.get("quarantined", 0), summary["seconds"],
    )  # fmt: skip
    return summary


def _publish(summary: dict[str, Any], coverage: list[dict[str, Any]]) -> None:
    counts = (
        "files", "station_days", "units", "units_written", "units_skipped", "units_empty",
        "units_failed", "batches", "samples_written", "quarantined", "skipped_hidden", "events",
    )  # fmt: skip
    lines = t.summary_lines("Archive batch", summary, counts, flags=False)
    lines += [
        "",
        f"## Orchestration ({len(summary.get('dask_workers', []))} Dask workers)",
        "",
        "| phase | tasks | threads | wall s | task work s | overhead | idle s: start, "
        "between tasks, tail |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, o in summary.get("orchestration", {}).items():
        idle = o.get("idle", {})
        lines.append(
            f"| {name} | {o['tasks']} | {o['threads']} | {o['wall_s']} | {o['work_s']} "
            f"| {100 * o['overhead']:.1f}% | {idle.get('start_s', 0)}, "
            f"{idle.get('between_s', 0)}, {idle.get('tail_s', 0)} |"
        )
    create_markdown_artifact(
        "\n".join(lines), key="archive-batch-summary", description="counts of an archive batch"
    )
    if coverage:
        create_table_artifact(
            coverage, key="archive-batch-coverage", description="per-station coverage"
        )
    t.publish_quarantine(summary, "archive-batch-quarantine")


_context_cache: dict[str, Any] = {}


class BatchTaskRunner(DaskTaskRunner):
    """Prefect's ``DaskTaskRunner``, paying its per-task context costs once per flow run.

    For each task ``DaskTaskRunner`` serialises the flow's whole context (the Prefect
    settings among it) and tokenizes it, and each worker rebuilds the settings and two API
    clients for each task run: ~0.25 s in the flow and ~0.55 s on the worker per task here,
    where the work of an archive batch is seconds. This runner serialises the context once
    per flow run and submits each task through :func:`tasks.batch.run_task_cached`, which
    keeps the settings context per worker process and an API client per worker thread.
    Each task is still one Prefect task run (``run_task_sync``: states, events, logs,
    retries); a task with ``wait_for``, or an async one, goes through ``DaskTaskRunner``."""

    def submit(  # type: ignore[override]
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Any = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> PrefectDaskFuture[Any]:
        if wait_for or task.isasync or not self._started:
            return super().submit(task, parameters, wait_for, dependencies)  # type: ignore[arg-type]
        from distributed import Future

        parameters = self._optimize_futures(parameters)
        base, settings_key, settings_context = self._base_context()
        task_run_id = uuid4()
        inputs = {
            k: collect_task_run_inputs_sync(v, future_cls=Future) for k, v in parameters.items()
        }
        for k, extra in (dependencies or {}).items():
            inputs[k] = inputs.get(k, set()) | extra
        context = {
            **base,
            "asset_context": AssetContext.from_task_and_inputs(
                task=task, task_run_id=task_run_id, task_inputs=inputs, copy_to_child_ctx=True
            ).serialize(),
        }
        future = self.client.submit(
            b.run_task_cached,
            task,
            task_run_id,
            parameters,
            inputs,
            context,
            settings_key,
            settings_context,
            key=f"{task.name}-{task_run_id.hex}",
            pure=False,
        )
        return PrefectDaskFuture[Any](wrapped_future=future, task_run_id=task_run_id)

    @staticmethod
    def _base_context() -> tuple[dict[str, Any], str, dict[str, Any]]:
        """The flow run's serialised context (no settings, no asset context), the settings'
        key and the serialised settings; made once per flow run."""
        ctx = FlowRunContext.get()
        run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else ""
        if _context_cache.get("run_id") != run_id or "base" not in _context_cache:
            base = serialize_context()
            settings_context = base.pop("settings_context")
            base["settings_context"] = {}
            base.pop("asset_context", None)
            key = hashlib.sha256(
                json.dumps(settings_context, sort_keys=True, default=str).encode()
            ).hexdigest()
            _context_cache.update(run_id=run_id, base=(base, key, settings_context))
        cached: tuple[dict[str, Any], str, dict[str, Any]] = _context_cache["base"]
        return cached


def task_runner(settings: Settings, address: str | None = None) -> DaskTaskRunner:
    """A runner on the scheduler at ``address`` (or ``settings.dask_address``), else a
    LocalCluster of ``dask_workers`` processes with ``dask_memory_limit`` each."""
    address = address or settings.dask_address
    if address:
        return BatchTaskRunner(address=address)
    return BatchTaskRunner(
        cluster_kwargs={
            "n_workers": settings.dask_workers,
            "threads_per_worker": settings.dask_threads_per_worker,
            "memory_limit": settings.dask_memory_limit,
            "processes": True,
            "dashboard_address": ":0",
        }
    )


def run_archive_batch(
    settings: Settings,
    sds: str,
    stations: str | None,
    events: str | None,
    start_ns: int | None,
    end_ns: int | None,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Run the flow on a Dask cluster (``dask_address``, the settings', or a local one)."""
    return archive_batch.with_options(
        task_runner=task_runner(settings, dask_address)  # type: ignore[arg-type]
    )(
        sds=sds,
        stations=stations,
        events=events,
        start_ns=start_ns,
        end_ns=end_ns,
        settings=settings.model_dump(),
    )
