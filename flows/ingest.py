"""``ingest-archive``: a local archive (SDS or miniSEED/SAC folder) into the store."""

from __future__ import annotations

from typing import Any

from prefect import flow
from seismoflow.tasks import ingest as t

from seismoflow.settings import Settings


@flow(name="ingest-archive", log_prints=True)
def ingest_archive(
    sds: str,
    stations: str | None = None,
    events: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ingest an archive: continuous channel-days, then event windows; returns the summary
    (also published as the run's ``ingest-summary`` artifact)."""
    s = Settings(**(settings or {}))
    summary = t.ingest_steps(s, sds, stations, events, start_ns, end_ns)
    t.publish_ingest(summary)
    return summary


def run_ingest(
    settings: Settings,
    sds: str,
    stations: str | None,
    events: str | None,
    start_ns: int | None,
    end_ns: int | None,
) -> dict[str, Any]:
    """Run the flow with a thread pool sized by the settings."""
    return ingest_archive(
        sds=sds,
        stations=stations,
        events=events,
        start_ns=start_ns,
        end_ns=end_ns,
        settings=settings.model_dump(),
    )
