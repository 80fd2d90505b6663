"""Tasks of an FDSN fetch (thin wrappers over :mod:`seismoflow.fdsn.run`).

Credentials are resolved inside each task from the settings' named sources (environment,
Prefect Secret block, token file path) and never travel as task or flow parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from seismoflow.fdsn import run
from seismoflow.fdsn.credentials import resolve_credentials
from seismoflow.settings import Settings


@task(name="fetch-metadata", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def fetch_metadata(selection: run.Selection, settings: Settings, staging: str) -> run.Metadata:
    credentials = resolve_credentials(settings)
    get_run_logger().info("credentials: %s", credentials.kind)
    return run.fetch_metadata(selection, settings, Path(staging), credentials)


@task(name="plan-requests", cache_policy=NO_CACHE)
def plan_requests(
    meta: run.Metadata, selection: run.Selection, settings: Settings
) -> tuple[list[run.Request], int]:
    return run.plan_requests(meta, selection, settings, run.read_ledger(settings.store))


@task(name="fetch-waveforms", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def fetch_waveforms(
    requests: Sequence[run.Request], settings: Settings, staging: str
) -> dict[str, Any]:
    logger = get_run_logger()
    return run.fetch_requests(
        settings.store,
        requests,
        settings,
        Path(staging),
        resolve_credentials(settings),
        log=logger.warning,
    )
