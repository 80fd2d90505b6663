"""Tasks of feature extraction (thin wrappers over :mod:`seismoflow.featurize`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from seismoflow.storage.finalize import finalize_store

from seismoflow.archive.ingest import window_layout
from seismoflow.featurize import extract, noise
from seismoflow.settings import Settings


@task(name="plan-noise-windows", cache_policy=NO_CACHE)
def plan_noise(location: str, settings: Settings) -> noise.NoisePlan:
    return noise.plan_store_noise(
        location,
        window_layout(settings),
        settings.noise_margin_s,
        settings.noise_label_lists,
        settings.noise_seed,
    )


@task(name="cut-noise-windows", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def cut_noise(
    location: str, channel_sets: Sequence[str], plan: noise.NoisePlan, settings: Settings
) -> dict[str, int]:
    return noise.cut_noise(
        location,
        channel_sets,
        plan,
        window_layout(settings),
        settings.noise_per_channel_set,
        settings.noise_screen_max_ratio,
    )


@task(name="extract-features", cache_policy=NO_CACHE)
def extract_features(
    location: str, block_traces: int, dask_address: str | None, flow_run_id: str | None
) -> dict[str, Any]:
    return extract.extract_features(location, block_traces, dask_address, flow_run_id)


@task(name="finalize-store", cache_policy=NO_CACHE)
def finalize(location: str) -> None:
    finalize_store(location)
