"""``fetch-fdsn``: events, stations and waveforms from FDSN web services into the store.

Events (fdsnws-event) -> stations around them (fdsnws-station, response level) -> event
windows or station-days (fdsnws-dataselect bulk requests, politely, with retries) staged as
miniSEED -> the same ingest steps as a local archive (``ingest-archive``'s tasks, run in
this flow).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.utilities.annotations import unmapped
from seismoflow.storage.location import store_exists
from seismoflow.tasks import fetch as t
from seismoflow.tasks import ingest as ingest_tasks
from seismoflow.tasks.pool import TaskPool

from seismoflow.archive.sources import Problem
from seismoflow.fdsn.run import Request, Selection, staging_folder
from seismoflow.progress import progress
from seismoflow.settings import Settings


@flow(name="fetch-fdsn", log_prints=True)
def fetch_fdsn(selection: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Fetch what ``selection`` asks for and ingest it; returns the run summary."""
    s = Settings(**settings)
    sel = Selection(**{**selection, "event_types": tuple(selection.get("event_types", ()))})
    logger = get_run_logger()
    staging = staging_folder(s)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    meta = t.fetch_metadata(sel, s, str(staging))
    stats: Counter[str] = Counter(meta.stats)
    n_stations = (
        0 if meta.channels.empty else len(meta.channels[["network", "station"]].drop_duplicates())
    )
    logger.info("catalogue: %d events; stations: %d", len(meta.catalog), n_stations)
    timings["metadata"] = time.perf_counter() - clock

    clock = time.perf_counter()
    problems: list[str] = list(meta.problems)
    skipped: int | None = None
    n_lines = 0
    asked: set[Any] = set()
    # Rounds: a station whose best channel set had no data gets its next set next round.
    for round_no in range(1, len(s.channel_priority) + 2):
        requests, answered = t.plan_requests(meta, sel, s)
        skipped = answered if skipped is None else skipped
        keys = {ln.ledger_key(r.provider) for r in requests for ln in r.lines}
        if not keys or keys <= asked:  # nothing new (lines that failed this run stay failed)
            break
        asked |= keys
        chunks = _task_chunks(requests, s.fetch_events_per_task)
        lines_now = sum(len(r.lines) for r in requests)
        n_lines += lines_now
        logger.info(
            "round %d: %d requests (%d lines); %d lines answered before this run",
            round_no, len(requests), lines_now, skipped,
        )  # fmt: skip
        with (
            TaskPool(fetch_workers(s)) as pool,
            progress(f"dataselect lines (round {round_no})", lines_now) as advance,
        ):
            futures = pool.map(t.fetch_waveforms, chunks, unmapped(s), unmapped(str(staging)))
            for fut in as_completed(list(futures)):
                out = fut.result()
                stats.update(out["stats"])
                problems += out["problems"]
                advance(out["lines"])
    skipped = skipped or 0
    timings["waveforms"] = time.perf_counter() - clock

    ingest: dict[str, Any] = {}
    waveforms = staging / "waveforms"
    if waveforms.is_dir():
        clock = time.perf_counter()
        ingest = ingest_tasks.ingest_steps(
            s,
            str(waveforms),
            str(meta.stations_path) if meta.stations_path else None,
            str(meta.events_path) if meta.events_path else None,
            None,
            None,
        )
        ingest_tasks.publish_ingest(ingest)
        timings["ingest"] = time.perf_counter() - clock
    if meta.problems and store_exists(s.store):
        # Channels refused for their codes are bad input too: quarantined with the reason.
        refused = [Problem(source="fdsnws-station", reason=p) for p in meta.problems]
        ingest_tasks.record_problems(s.store, refused, "fetch")
    summary = {
        "events": len(meta.catalog),
        "stations": n_stations,
        "requests": stats.get("requests", 0),
        "requests_by_service": {
            k.removeprefix("requests_"): v for k, v in stats.items() if k.startswith("requests_")
        },
        "retried": stats.get("retried", 0),
        "retried_by_cause": {
            k.removeprefix("retried_"): v for k, v in stats.items() if k.startswith("retried_")
        },
        "failed_requests": stats.get("failed_requests", 0),
        "split_413": stats.get("split_413", 0),
        "lines_planned": n_lines + skipped,
        "lines_skipped_done": skipped,
        "lines_with_data": stats.get("lines_data", 0),
        "lines_no_data": stats.get("lines_nodata", 0),
        "traces": stats.get("traces", 0),
        "bytes": stats.get("bytes", 0),
        "waveform_bytes": stats.get("waveform_bytes", 0),
        "problems": problems,
        "staging": str(staging),
        "ingest": ingest,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    _publish(summary)
    logger.info(
        "fetch: %d requests (%d retried, %d failed), %d lines with data, %d traces, %d bytes "
        "(%.1f s)",
        summary["requests"], summary["retried"], summary["failed_requests"],
        summary["lines_with_data"], summary["traces"], summary["bytes"],
        sum(timings.values()),
    )  # fmt: skip
    return summary


def _task_chunks(requests: list[Request], events_per_task: int) -> list[list[Request]]:
    """Requests grouped into tasks of about ``events_per_task`` requests each."""
    return [requests[i : i + events_per_task] for i in range(0, len(requests), events_per_task)]


def _publish(summary: dict[str, Any]) -> None:
    lines = ["# FDSN fetch", "", "| what | count |", "|---|---|"]
    for key in (
        "events",
        "stations",
        "requests",
        "retried",
        "failed_requests",
        "split_413",
        "lines_planned",
        "lines_skipped_done",
        "lines_with_data",
        "lines_no_data",
        "traces",
        "bytes",
    ):
        lines.append(f"| {key} | {summary.get(key, 0)} |")
    lines += ["", "## Requests by service", "", "| service | requests |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary["requests_by_service"].items())]
    lines += ["", "## Retries by cause", "", "| cause | retries |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary["retried_by_cause"].items())]
    lines += ["", "## Seconds per stage", "", "| stage | s |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["seconds"].items()]
    create_markdown_artifact("\n".join(lines), key="fetch-summary", description="FDSN fetch")
    if summary["problems"]:
        create_table_artifact(
            [{"problem": p} for p in summary["problems"]],
            key="fetch-problems",
            description="requests that failed after retries",
        )


def fetch_workers(settings: Settings) -> int:
    """Threads for dataselect tasks: the worker setting, or enough for every provider's
    concurrency limit if that is more."""
    return max(settings.max_workers, settings.fetch_concurrency * len(settings.fdsn_url))


def run_fetch(settings: Settings, selection: Selection) -> dict[str, Any]:
    """Run the flow (its tasks run on :func:`fetch_workers` threads)."""
    params = {
        "start_ns": selection.start_ns,
        "end_ns": selection.end_ns,
        "region": dict(selection.region),
        "minmagnitude": selection.minmagnitude,
        "event_types": list(selection.event_types),
        "network": selection.network,
        "station": selection.station,
        "continuous": selection.continuous,
    }
    return fetch_fdsn(selection=params, settings=settings.model_dump())
