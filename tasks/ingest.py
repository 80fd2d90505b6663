"""Tasks of archive ingest (thin wrappers over :mod:`seismoflow.ingest`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from seismoflow import ingest
from seismoflow.archive.sources import Problem
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
