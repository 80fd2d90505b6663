"""Flows that deployments point at when a flow needs run-time wiring a deployment cannot
carry (a task runner chosen by a parameter)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from seismoflow.settings import Settings


@flow(name="archive-batches", log_prints=True)
def archive_batches(
    sds: str,
    store: str,
    stations: str | None = None,
    events: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    dask_address: str | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One parameterised archive batch: ``archive-batch`` as a subflow on the Dask cluster at
    ``dask_address`` (or a LocalCluster when None)."""
    from seismoflow.flows.archive_batch import run_archive_batch

    s = Settings(**{**(settings or {}), "store": store})
    return run_archive_batch(s, sds, stations, events, start_ns, end_ns, dask_address)
