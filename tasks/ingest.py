"""Tasks of archive ingest (thin wrappers over :mod:`seismoflow.archive.ingest`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.utilities.annotations import unmapped
from seismoflow.tasks.pool import TaskPool

from seismoflow.archive import ingest
from seismoflow.archive.sources import Problem
from seismoflow.progress import progress
from seismoflow.settings import Settings


@task(name="plan-ingest", cache_policy=NO_CACHE)
def plan(
    sds: str,
    stations: str | None,
    events: str | None,
    start_ns: int | None,
    end_ns: int | None,
) -> ingest.IngestPlan:
    return ingest.plan_ingest(
        Path(sds),
        Path(stations) if stations else None,
        Path(events) if events else None,
        start_ns,
        end_ns,
    )


@task(name="prepare-store", cache_policy=NO_CACHE)
def prepare(location: str, plan: ingest.IngestPlan, settings: Settings) -> ingest.IngestPlan:
    return ingest.prepare_store(location, plan, settings)


@task(name="record-problems", cache_policy=NO_CACHE)
def record_problems(location: str, problems: Sequence[Problem], stage: str) -> None:
    ingest.record_problems(location, problems, stage)


@task(name="ingest-channel-days", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def ingest_batch(
    location: str, units: Sequence[ingest.ChannelDayUnit], settings: Settings
) -> list[ingest.UnitResult]:
    return ingest.ingest_batch(location, units, settings)


@task(name="record-channel-days", cache_policy=NO_CACHE)
def record_continuous(location: str, results: Sequence[ingest.UnitResult]) -> None:
    ingest.record_continuous(location, results)


@task(name="plan-event-windows", cache_policy=NO_CACHE)
def prepare_windows(location: str, settings: Settings) -> list[int]:
    return ingest.prepare_windows(location, settings)


@task(name="cut-event-windows", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def cut_windows(location: str, indices: Sequence[int], settings: Settings) -> dict[str, Any]:
    return ingest.cut_batch(location, indices, settings)


@task(name="finalize-store", cache_policy=NO_CACHE)
def finalize(location: str) -> None:
    ingest.finalize(location)


def open_archive(
    settings: Settings,
    sds: str,
    stations: str | None,
    events: str | None,
    start_ns: int | None,
    end_ns: int | None,
) -> ingest.IngestPlan:
    """The opening both archive flows share (``ingest-archive``, ``archive-batch``): plan
    the archive, quarantine what the scan could not use, prepare the store; the plan of
    what is left to do. Call it inside a flow (each step is a task run)."""
    found = plan(sds, stations, events, start_ns, end_ns)
    record_problems(settings.store, found.problems, "scan")
    return prepare(settings.store, found, settings)


def ingest_steps(
    s: Settings,
    sds: str,
    stations: str | None,
    events: str | None,
    start_ns: int | None,
    end_ns: int | None,
) -> dict[str, Any]:
    """The ingest both ``ingest-archive`` and ``fetch-fdsn`` run (a flow does not start
    another flow): plan, continuous channel-days in batches, event windows, finalize.
    Logs one line per stage with its counts and seconds; returns the summary. Call it
    inside a flow. A run that fails before it finalizes forgets what it kept in memory
    (channel documents, shards for its windows) as it fails."""
    try:
        return _ingest_steps(s, sds, stations, events, start_ns, end_ns)
    except BaseException:
        ingest.forget_run(s.store)
        raise


def _ingest_steps(
    s: Settings,
    sds: str,
    stations: str | None,
    events: str | None,
    start_ns: int | None,
    end_ns: int | None,
) -> dict[str, Any]:
    logger = get_run_logger()
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    plan = open_archive(s, sds, stations, events, start_ns, end_ns)
    timings["plan"] = time.perf_counter() - clock
    planned = ingest.plan_summary(plan)
    logger.info(
        "plan: %d files, %d channel-days to write, %d events, %d scan problems (%.1f s)",
        planned["files"], planned["units"], planned["events"], planned["scan_problems"],
        timings["plan"],
    )  # fmt: skip

    clock = time.perf_counter()
    results: list[ingest.UnitResult] = []
    with TaskPool.of(s) as pool, progress("channel-days", len(plan.units)) as advance:
        batches = plan.batches(s.batch_bytes)
        futures = pool.map(ingest_batch, unmapped(s.store), batches, unmapped(s))
        for future in as_completed(list(futures)):
            batch = future.result()
            results.extend(batch)
            advance(len(batch))
    record_continuous(s.store, results)
    timings["continuous"] = time.perf_counter() - clock
    summary: dict[str, Any] = {**planned, **ingest.summarize_units(results)}
    summary["quarantined"] += len(plan.problems)
    logger.info(
        "continuous: %d channel-days written, %d skipped, %d failed; %d samples; "
        "%d quarantined (%.1f s)",
        summary.get("units_written", 0), summary.get("units_skipped", 0),
        summary.get("units_failed", 0), summary["samples_written"], summary["quarantined"],
        timings["continuous"],
    )  # fmt: skip

    windows: dict[str, int] = {}
    if events:
        clock = time.perf_counter()
        pending = prepare_windows(s.store, s)
        chunks = [pending[i : i + s.window_batch] for i in range(0, len(pending), s.window_batch)]
        with TaskPool.of(s) as pool, progress("event windows", len(pending)) as advance:
            cuts = pool.map(cut_windows, unmapped(s.store), chunks, unmapped(s))
            for cut in as_completed(list(cuts)):
                counts = cut.result()
                for k, v in counts.items():
                    windows[k] = windows.get(k, 0) + v
                advance(counts.get("written", 0))
        timings["windows"] = time.perf_counter() - clock
        logger.info(
            "event windows: %s (%.1f s)",
            ", ".join(f"{v} {k}" for k, v in sorted(windows.items())) or "none",
            timings["windows"],
        )
    summary["windows"] = windows
    finalize(s.store)
    summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return summary


def summary_lines(
    title: str, summary: dict[str, Any], counts: tuple[str, ...], flags: bool = True
) -> list[str]:
    """Markdown of an ingest summary (``ingest-archive``, ``archive-batch``): the ``counts``,
    hidden files skipped, quality flags, event windows and seconds per stage."""
    lines = [f"# {title}", "", "| what | count |", "|---|---|"]
    lines += [f"| {key} | {summary.get(key, 0)} |" for key in counts]
    if summary.get("skipped_hidden_first"):
        shown = ", ".join(summary["skipped_hidden_first"])
        lines += ["", f"Hidden files skipped (name starts with '.'): {shown}"]
    if flags:
        lines += ["", "## Quality flags (channel-days)", "", "| flag | channel-days |"]
        lines += ["|---|---|", *(f"| {k} | {v} |" for k, v in sorted(summary["flags"].items()))]
    lines += ["", "## Event windows", "", "| what | traces |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary.get("windows", {}).items())]
    lines += ["", "## Seconds per stage", "", "| stage | s |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.get("seconds", {}).items()]
    return lines


def publish_quarantine(summary: dict[str, Any], key: str) -> None:
    """The quarantine reasons of a run as a table artifact (none when nothing was refused)."""
    reasons = summary.get("quarantine_reasons", {})
    if reasons:
        create_table_artifact(
            [{"reason": k, "count": v} for k, v in sorted(reasons.items())],
            key=key,
            description="quarantine reasons",
        )


def publish_ingest(summary: dict[str, Any]) -> None:
    """The ingest summary and quarantine reasons as artifacts of the current run."""
    counts = (
        "files", "units", "units_written", "units_skipped", "units_empty", "units_failed",
        "samples_written", "quarantined", "skipped_hidden", "events",
    )  # fmt: skip
    summary = {"flags": {}, **summary}
    create_markdown_artifact(
        "\n".join(summary_lines("Archive ingest", summary, counts)),
        key="ingest-summary",
        description="counts of an archive ingest",
    )
    publish_quarantine(summary, "ingest-quarantine")
