"""The worker setting (``max_workers``, ``--workers``) bounds the tasks of every flow that runs
tasks, however the flow is started: called directly here, as a deployment or another flow
would call it, not through the CLI's wrappers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from seismoflow.tasks import pool as pool_module

from seismoflow.fdsn.run import Selection
from seismoflow.settings import Settings
from seismoflow.times import to_ns
from tests.fdsnws import FDSNService

pytestmark = [pytest.mark.slow, pytest.mark.data]

# One day of the real archive holding a continuous record of five three-component stations
# (RockNet, 2020-03-28): station-days to ingest and channel sets to draw noise from.
START, END = "2020-03-28T00:00:00", "2020-03-29T00:00:00"
# Two days with catalogued events recorded by several stations, to fetch.
FETCH_START, FETCH_END = "2022-02-02T00:00:00", "2022-02-04T00:00:00"


class Peak:
    """How many calls of a wrapped function ran at once, at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.running += 1
                self.calls += 1
                self.peak = max(self.peak, self.running)
            try:
                time.sleep(0.3)  # long enough for a free thread to start the next one
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1

        return wrapped


@pytest.fixture
def pool_sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The size of every task pool a flow opens."""
    sizes: list[int] = []
    original = pool_module.TaskPool.__init__

    def spy(self: pool_module.TaskPool, max_workers: int) -> None:
        sizes.append(max_workers)
        original(self, max_workers)

    monkeypatch.setattr(pool_module.TaskPool, "__init__", spy)
    yield sizes


def _settings(store: Path, workers: int, **extra: Any) -> dict[str, Any]:
    # batch_bytes=1: every station-day is a task of its own, so there are tasks to overlap.
    return Settings(store=str(store), max_workers=workers, batch_bytes=1, **extra).model_dump()


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_and_features_flows_honour_the_setting(
    workers: int,
    archive: Path,
    prefect_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pool_sizes: list[int],
) -> None:
    from seismoflow.flows.features import extract_features
    from seismoflow.flows.ingest import ingest_archive

    from seismoflow.archive import ingest as plain_ingest
    from seismoflow.featurize import noise as plain_noise

    batches, noise = Peak(), Peak()
    monkeypatch.setattr(plain_ingest, "ingest_batch", batches.wrap(plain_ingest.ingest_batch))
    monkeypatch.setattr(plain_noise, "cut_noise", noise.wrap(plain_noise.cut_noise))
    store = tmp_path / "store.zarr"
    summary = ingest_archive(
        sds=str(archive / "sds"), stations=str(archive / "stations.xml.gz"),
        events=str(archive / "events.xml"), start_ns=to_ns(START), end_ns=to_ns(END),
        settings=_settings(store, workers),
    )  # fmt: skip
    assert summary["units_written"] > 0 and batches.calls >= 4
    assert batches.peak == workers  # bounded, and used
    extract_features(settings=_settings(store, workers))
    assert 1 <= noise.peak <= workers
    assert pool_sizes and set(pool_sizes) == {workers}


def test_fetch_flow_honours_the_setting(
    archive: Path,
    prefect_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pool_sizes: list[int],
) -> None:
    from seismoflow.flows.fetch import fetch_fdsn

    from seismoflow.fdsn import run as plain_fetch

    requests = Peak()
    monkeypatch.setattr(plain_fetch, "fetch_requests", requests.wrap(plain_fetch.fetch_requests))
    with FDSNService(archive) as service:
        settings = _settings(
            tmp_path / "fetched.zarr", 1, fdsn_url=[service.url], fetch_concurrency=1,
            max_distance_deg=0.6, fetch_events_per_task=1,
        )  # fmt: skip
        sel = Selection(to_ns(FETCH_START), to_ns(FETCH_END))
        selection = {
            "start_ns": sel.start_ns, "end_ns": sel.end_ns, "region": {},
            "minmagnitude": None, "event_types": [], "network": None, "station": None,
            "continuous": False,
        }  # fmt: skip
        summary = fetch_fdsn(selection=selection, settings=settings)
    assert summary["traces"] > 0 and requests.calls >= 2
    assert requests.peak == 1
    assert pool_sizes and set(pool_sizes) == {1}
